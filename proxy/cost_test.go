package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/proxy"
)

// TestCostHeaders: a metered non-streaming answer carries its charge and
// the available credits after it, equal to the ledger's charge entry and
// balance, with the body unchanged and an exact Content-Length; a stream
// carries the available credits before it, and its charge as an HTTP
// trailer once read to the end. For every metered API the fake upstream
// speaks, through net/http's client.
func TestCostHeaders(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name, path, body, recorded string
		stream                     bool
	}{
		{name: "chat JSON", path: "/v1/chat/completions", body: chatBody("gpt-4o", ""), recorded: "chat_completion.json"},
		{name: "chat SSE", path: "/v1/chat/completions", body: chatBody("gpt-4o", `,"stream":true,"stream_options":{"include_usage":true}`), recorded: "chat_stream.sse", stream: true},
		{name: "messages JSON", path: "/v1/messages", body: `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"Hello"}]}`, recorded: "anthropic_message.json"},
		{name: "messages SSE", path: "/v1/messages", body: `{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"Hello"}]}`, recorded: "anthropic_stream.sse", stream: true},
		{name: "responses JSON", path: "/v1/responses", body: `{"model":"gpt-4.1","input":"Hello","max_output_tokens":500}`, recorded: "responses_response.json"},
		{name: "responses SSE", path: "/v1/responses", body: `{"model":"gpt-4.1","input":"Hello","max_output_tokens":500,"stream":true}`, recorded: "responses_stream.sse", stream: true},
		{name: "embeddings", path: "/v1/embeddings", body: `{"model":"text-embedding-3-small","input":"Hello"}`, recorded: "embedding.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cust := newCustomer()
			h.grant(cust, "10")
			res, body := h.do(request{path: tc.path, customer: cust, body: tc.body})
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, body)
			}
			if !bytes.Equal(body, testdata(t, tc.recorded)) {
				t.Errorf("the body changed:\n%s", body)
			}
			charge := h.settled(cust, 1)[0]
			cost := (-charge.Amount).String()
			reserved := mustMicros(t, res.Header.Get(proxy.HeaderReserved))
			if reserved <= 0 || res.Header.Get(proxy.HeaderRequestID) != charge.Reference {
				t.Errorf("reserved %s, request id %q; want a hold and the charge's reference %q", reserved, res.Header.Get(proxy.HeaderRequestID), charge.Reference)
			}
			if !tc.stream {
				want := map[string]string{
					proxy.HeaderCost:      cost,
					proxy.HeaderAvailable: charge.BalanceAfter.String(),
					"Content-Length":      strconv.Itoa(len(body)),
					"Trailer":             "",
				}
				for k, v := range want {
					if got := res.Header.Get(k); got != v {
						t.Errorf("%s: %q, want %q", k, got, v)
					}
				}
				if res.ContentLength != int64(len(body)) || len(res.Trailer) != 0 {
					t.Errorf("ContentLength %d, Trailer %v; want %d and none", res.ContentLength, res.Trailer, len(body))
				}
				return
			}
			if got := res.Header.Get(proxy.HeaderAvailable); got != "10.000000" {
				t.Errorf("%s: %q, want the 10.000000 available before the request", proxy.HeaderAvailable, got)
			}
			if got := res.Header.Get(proxy.HeaderCost); got != "" {
				t.Errorf("%s in the headers of a stream: %q", proxy.HeaderCost, got)
			}
			if got := res.Trailer.Get(proxy.HeaderCost); got != cost {
				t.Errorf("trailer %s: %q, want the charge %s (trailers %v)", proxy.HeaderCost, got, cost, res.Trailer)
			}
			if len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
				t.Errorf("Transfer-Encoding %v; want chunked, which trailers need", res.TransferEncoding)
			}
		})
	}
}

// TestCostHeadersOtherHolds: X-Tollgate-Available is as of the request's
// own reservation: the holds of the customer's other requests in flight
// are deducted, and the request's own hold is replaced by its charge.
func TestCostHeadersOtherHolds(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	h.grant(cust, "10")
	if err := h.store.Reserve(t.Context(), cust, "other-request", mustMicros(t, "2.5"), 60e9); err != nil {
		t.Fatal(err)
	}
	res, body := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	cost := mustMicros(t, res.Header.Get(proxy.HeaderCost))
	if want := (mustMicros(t, "7.5") - cost).String(); res.Header.Get(proxy.HeaderAvailable) != want {
		t.Errorf("%s: %q, want %s (10 - 2.5 held by another request - %s)", proxy.HeaderAvailable, res.Header.Get(proxy.HeaderAvailable), want, cost)
	}
	if err := h.store.Release(t.Context(), cust, "other-request"); err != nil {
		t.Fatal(err)
	}
	if charge := h.settled(cust, 1)[0]; -charge.Amount != cost {
		t.Errorf("header cost %s, ledger charge %s", cost, -charge.Amount)
	}
}

// TestCostHeadersLargeBody: a non-streaming body above MaxHeldBodyBytes
// is forwarded as it arrives, byte for byte, without the two headers
// that would need it held back, and is still charged.
func TestCostHeadersLargeBody(t *testing.T) {
	for _, length := range []string{"known", "chunked"} {
		t.Run(length, func(t *testing.T) {
			up := newUpstream(t)
			// An embedding answer padded past the cap with whitespace, as
			// a batch of many embeddings would be.
			big := append(bytes.Repeat([]byte(" "), proxy.MaxHeldBodyBytes), testdata(t, "embedding.json")...)
			up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				if length == "known" {
					w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				}
				for b := big; len(b) > 0; {
					n := min(len(b), 64<<10)
					w.Write(b[:n])
					w.(http.Flusher).Flush()
					b = b[n:]
				}
			})
			h := newHarness(t, harnessOptions{upstream: up})
			cust := newCustomer()
			h.grant(cust, "10")
			res, body := h.do(request{path: "/v1/embeddings", customer: cust, body: `{"model":"text-embedding-3-small","input":"Hello"}`})
			if res.StatusCode != http.StatusOK || !bytes.Equal(body, big) {
				t.Fatalf("status %d, %d bytes; want 200 and the %d bytes sent", res.StatusCode, len(body), len(big))
			}
			for _, k := range []string{proxy.HeaderCost, proxy.HeaderAvailable} {
				if v, ok := res.Header[k]; ok {
					t.Errorf("%s: %q on a body above the cap", k, v)
				}
			}
			if res.Header.Get(proxy.HeaderReserved) == "" || res.Header.Get(proxy.HeaderRequestID) == "" {
				t.Errorf("headers %v; want the request id and the hold", res.Header)
			}
			if c := h.settled(cust, 1)[0]; c.InputTokens != 8 {
				t.Errorf("charge %+v; want the 8 input tokens the body reports", c)
			}
		})
	}
}

// TestCostHeadersAtTheCap: a body of exactly MaxHeldBodyBytes is still
// held back and gets both headers.
func TestCostHeadersAtTheCap(t *testing.T) {
	up := newUpstream(t)
	rec := testdata(t, "embedding.json")
	body := append(bytes.Repeat([]byte(" "), proxy.MaxHeldBodyBytes-len(rec)), rec...)
	up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	h := newHarness(t, harnessOptions{upstream: up})
	cust := newCustomer()
	h.grant(cust, "10")
	res, got := h.do(request{path: "/v1/embeddings", customer: cust, body: `{"model":"text-embedding-3-small","input":"Hello"}`})
	if res.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("status %d, %d bytes; want 200 and the %d bytes sent", res.StatusCode, len(got), len(body))
	}
	charge := h.settled(cust, 1)[0]
	if res.Header.Get(proxy.HeaderCost) != (-charge.Amount).String() || res.Header.Get(proxy.HeaderAvailable) != charge.BalanceAfter.String() {
		t.Errorf("cost %q, available %q; want %s and %s", res.Header.Get(proxy.HeaderCost), res.Header.Get(proxy.HeaderAvailable), -charge.Amount, charge.BalanceAfter)
	}
}

// TestCostHeadersUpstreamError: an upstream error passes through verbatim
// with the request id, and nothing about credits.
func TestCostHeadersUpstreamError(t *testing.T) {
	up := newUpstream(t)
	const answer = `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`
	up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, answer)
	})
	h := newHarness(t, harnessOptions{upstream: up})
	cust := newCustomer()
	h.grant(cust, "10")
	for _, extra := range []string{"", `,"stream":true`} {
		res, body := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", extra)})
		if res.StatusCode != http.StatusTooManyRequests || string(body) != answer {
			t.Fatalf("%d %s; want the upstream's 429 verbatim", res.StatusCode, body)
		}
		if res.Header.Get(proxy.HeaderRequestID) == "" {
			t.Error("no request id on an upstream error")
		}
		for _, k := range []string{proxy.HeaderCost, proxy.HeaderAvailable, proxy.HeaderReserved, "Trailer"} {
			if v, ok := res.Header[k]; ok {
				t.Errorf("%s: %q on an upstream error", k, v)
			}
		}
		if len(res.Trailer) != 0 {
			t.Errorf("trailers %v on an upstream error", res.Trailer)
		}
	}
	if a := h.account(cust); a.Balance != money.Micros(10*money.Credit) {
		t.Errorf("balance %s; upstream errors cost nothing", a.Balance)
	}
}

// TestCostTrailerCutStream: a stream the upstream cuts short ends as
// before (the client sees the broken body, not a clean end with a
// trailer), and is charged.
func TestCostTrailerCutStream(t *testing.T) {
	up := newUpstream(t)
	data := testdata(t, "chat_stream.sse")
	up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-stream
	})
	h := newHarness(t, harnessOptions{upstream: up})
	cust := newCustomer()
	h.grant(cust, "10")
	req, err := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", `,"stream":true`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tollgate-Customer", cust)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, ok := res.Trailer[proxy.HeaderCost]; !ok {
		t.Errorf("Trailer %v; want %s announced", res.Trailer, proxy.HeaderCost)
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Error("a cut stream read to a clean end")
	}
	if got := res.Trailer.Get(proxy.HeaderCost); got != "" {
		t.Errorf("trailer %s %q on a cut stream", proxy.HeaderCost, got)
	}
	if c := h.settled(cust, 1)[0]; c.Amount >= 0 {
		t.Errorf("charge %+v; a cut stream is never free", c)
	}
}

// TestCostTrailerSpeech: speech audio, which players play as it arrives,
// is forwarded as a stream, not held back: the headers (with the
// available credits before) reach the client while the upstream is still
// sending, and the cost follows as a trailer.
func TestCostTrailerSpeech(t *testing.T) {
	up := newUpstream(t)
	more := make(chan struct{})
	audio := bytes.Repeat([]byte{0xff, 0xf3}, 2048)
	up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "audio/mpeg")
		w.Write(audio[:1024])
		w.(http.Flusher).Flush()
		<-more
		w.Write(audio[1024:])
	})
	h := newHarness(t, harnessOptions{upstream: up, yaml: testConfig + `
  - path: /v1/audio/speech
    api: openai.audio
    upstream: UPSTREAM
    prices:
      tts-1: {per_minute: "0.015"}
`})
	cust := newCustomer()
	h.grant(cust, "10")
	req, err := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/audio/speech", strings.NewReader(`{"model":"tts-1","voice":"alloy","input":"Hello there"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tollgate-Customer", cust)
	// Held back, the headers would wait for the whole body, which waits
	// for more: the timer breaks that, and says so.
	held := time.AfterFunc(5*time.Second, func() { close(more) })
	res, err := http.DefaultClient.Do(req)
	if held.Stop() {
		close(more)
	} else {
		t.Error("the headers waited for the whole audio body")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || !bytes.Equal(body, audio) {
		t.Fatalf("%d bytes, %v; want the %d bytes of audio", len(body), err, len(audio))
	}
	charge := h.settled(cust, 1)[0]
	if res.Header.Get(proxy.HeaderAvailable) != "10.000000" || res.Header.Get(proxy.HeaderCost) != "" {
		t.Errorf("headers %v; want 10.000000 available before, and no cost header", res.Header)
	}
	if got := res.Trailer.Get(proxy.HeaderCost); got != (-charge.Amount).String() || charge.Amount >= 0 {
		t.Errorf("trailer %s %q; want the charge %s", proxy.HeaderCost, got, -charge.Amount)
	}
}
