package meter_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
)

// meteredBody is the shape of the ReadCloser the proxy wraps around an
// upstream response body: every byte read from upstream goes through the
// Tap, the client reads what Feed returns, and the usage is settled once,
// on EOF, error or Close, whichever comes first.
type meteredBody struct {
	upstream io.ReadCloser
	tap      *meter.Tap
	buf      []byte // read buffer for upstream
	pending  []byte // bytes owed to the client (aliases buf or the Tap's buffer)
	done     bool
	settle   func(meter.Usage)
}

func (b *meteredBody) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		if b.done {
			return 0, io.EOF
		}
		n, err := b.upstream.Read(b.buf)
		b.pending = b.tap.Feed(b.buf[:n])
		if err != nil {
			rest, u := b.tap.End()
			b.pending = append(b.pending[:len(b.pending):len(b.pending)], rest...)
			b.done = true
			b.settle(u)
			if !errors.Is(err, io.EOF) && len(b.pending) == 0 {
				return 0, err
			}
		}
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

func (b *meteredBody) Close() error {
	if !b.done {
		b.done = true
		_, u := b.tap.End() // client went away: settle what was produced
		b.settle(u)
	}
	return b.upstream.Close()
}

func Example() {
	// Before forwarding: parse, price, reserve, rewrite.
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}`)
	req, err := meter.ParseRequest(meter.OpenAIChat, "application/json", body)
	if err != nil {
		panic(err) // the proxy answers 400 invalid_request
	}
	prices := meter.Prices{"gpt-4o-mini": {Rates: meter.Rates{Input: money.MustParse("0.15"), CachedInput: money.MustParse("0.075"), CacheWriteInput: money.MustParse("0.15"), Output: money.MustParse("0.60")}}}
	price, err := prices.Lookup(req.Model)
	if err != nil {
		panic(err) // the proxy answers 400 model_not_priced
	}
	_, hold, err := req.Estimate(price, 4096)
	if err != nil {
		panic(err)
	}
	// The same ceiling as the estimate: the upstream body asks for no
	// more output than the hold covers.
	upstreamBody, outputCap, err := req.Rewrite(body, 4096)
	if err != nil {
		panic(err)
	}
	fmt.Printf("reserve %s, send %s (output cap %d)\n", hold, upstreamBody, outputCap)

	// After: meter the response as the client reads it.
	upstream := io.NopCloser(strings.NewReader(
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello!\"}}],\"usage\":null}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n" +
			"data: [DONE]\n\n"))
	mb := &meteredBody{
		upstream: upstream,
		tap:      meter.NewTap(req, "text/event-stream"),
		buf:      make([]byte, 32<<10),
		settle: func(u meter.Usage) {
			// Charge rather than Cost: the usage it returns is what the
			// ledger entry should record (a DALL·E image at a price
			// with token rates only is charged, and recorded, as
			// estimated tokens).
			u, cost, err := price.Charge(u)
			fmt.Printf("settle %d in, %d out, estimated=%v: %s %v\n", u.InputTokens, u.OutputTokens, u.Estimated, cost, err)
		},
	}
	client, _ := io.ReadAll(mb)
	mb.Close()
	fmt.Printf("client saw %q\n", client)
	// Output:
	// reserve 0.002547, send {"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":4096,"stream_options":{"include_usage":true}} (output cap 4096)
	// settle 9 in, 2 out, estimated=false: 0.000003 <nil>
	// client saw "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello!\"}}]}\n\ndata: [DONE]\n\n"
}
