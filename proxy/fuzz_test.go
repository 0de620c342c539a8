package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// fuzzRoutes are the paths FuzzExchange sends to, one per API testConfig
// routes (and Gemini's three ways of answering).
var fuzzRoutes = []string{
	"/v1/chat/completions",
	"/v1/messages",
	"/v1/responses",
	"/v1/embeddings",
	"/v1/models",
	"/v1beta/models/gemini-2.5-flash:generateContent",
	"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
	"/v1beta/models/gemini-2.5-flash:streamGenerateContent",
}

// fuzzClient gives up on an exchange that hangs, so that a hang is
// reported with its input instead of stalling the fuzzer.
var fuzzClient = &http.Client{Timeout: 10 * time.Second}

var (
	fuzzStatuses     = []int{200, 200, 200, 400, 429, 500, 529}
	fuzzContentTypes = []string{"application/json", "text/event-stream", "application/json; charset=utf-8", "text/plain", ""}
)

// FuzzExchange sends one request of arbitrary bytes through the proxy to
// a fake upstream that answers with arbitrary bytes (status, content type
// and body chosen by the fuzzer, the body written in two flushed pieces),
// as hostile clients and broken providers would. Whatever they send, the
// proxy must not crash and must not lose or invent credits:
//
//   - a request the upstream never saw is answered by tollgate with a 4xx
//     and charges nothing;
//   - one it saw is answered with the upstream's status;
//   - soon after the exchange (DESIGN: within a second), nothing stays
//     reserved, every charge debits (never credits), an upstream error
//     (non-2xx) charges nothing, and the balance equals the sum of the
//     customer's entries;
//   - a customer id the store refuses is refused before forwarding.
//
// Its seeds (recorded responses of every API, and a few broken ones) run
// in make test; go test ./proxy -run '^$' -fuzz FuzzExchange searches.
func FuzzExchange(f *testing.F) { fuzzExchange(f, boltStore(f)) }

// FuzzExchangeLeases is FuzzExchange on Redis with credit leases taken
// from a customer's first request, so that its holds are lent in process
// and its charges reach Redis in the lease's syncs.
func FuzzExchangeLeases(f *testing.F) {
	st := ledger.NewLeaseStore(redisClient(f), ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Idle: 200 * time.Millisecond, FlushInterval: 10 * time.Millisecond})
	f.Cleanup(func() { st.Close() })
	fuzzExchange(f, st)
}

func fuzzExchange(f *testing.F, st ledger.Store) {
	up := newUpstream(f)
	h := newHarness(f, harnessOptions{upstream: up, store: st})
	var calls atomic.Int64
	type answer struct {
		status      int
		contentType string
		body        []byte
		split       int
	}
	var current atomic.Pointer[answer]
	up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		calls.Add(1)
		a := current.Load()
		if a.contentType != "" {
			w.Header().Set("Content-Type", a.contentType)
		}
		w.WriteHeader(a.status)
		w.Write(a.body[:a.split])
		w.(http.Flusher).Flush()
		w.Write(a.body[a.split:])
	})

	seed := func(route int, req string, status, ctype int, file string) {
		body := testdata(f, file)
		f.Add(uint8(route), []byte(req), uint8(status), uint8(ctype), body, uint16(len(body)/2), "")
	}
	chat := chatBody("gpt-4o", "")
	chatStream := chatBody("gpt-4o", `,"stream":true,"stream_options":{"include_usage":true}`)
	claude := `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`
	claudeStream := `{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`
	resp := `{"model":"gpt-4.1","input":"Hi","max_output_tokens":100}`
	respStream := `{"model":"gpt-4.1","input":"Hi","max_output_tokens":100,"stream":true}`
	gemini := `{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}`
	seed(0, chat, 0, 0, "chat_completion.json")
	seed(0, chatStream, 0, 1, "chat_stream.sse")
	seed(1, claude, 0, 0, "anthropic_message.json")
	seed(1, claudeStream, 0, 1, "anthropic_stream.sse")
	seed(2, resp, 0, 0, "responses_response.json")
	seed(2, respStream, 0, 1, "responses_stream.sse")
	seed(3, `{"model":"text-embedding-3-small","input":"Hi"}`, 0, 0, "embedding.json")
	seed(5, gemini, 0, 0, "gemini_generate.json")
	seed(6, gemini, 0, 1, "gemini_stream.sse")
	seed(7, gemini, 0, 0, "gemini_stream_array.json")
	// Broken answers: a stream cut inside an event, usage in a JSON body
	// of the wrong content type, an error status with a usage, a huge
	// count.
	f.Add(uint8(0), []byte(chatStream), uint8(0), uint8(1), []byte("data: {\"choices\":[{\"delta\":{\"content\":\"Hel"), uint16(10), "")
	f.Add(uint8(0), []byte(chat), uint8(0), uint8(3), []byte(`{"usage":{"prompt_tokens":10,"completion_tokens":5}}`), uint16(3), "")
	f.Add(uint8(1), []byte(claude), uint8(5), uint8(0), []byte(`{"type":"error","usage":{"input_tokens":9,"output_tokens":9}}`), uint16(0), "")
	f.Add(uint8(0), []byte(chat), uint8(0), uint8(0), []byte(`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}}`), uint16(1), "")
	f.Add(uint8(0), []byte(`{"model":"gpt-4o","messages":[`), uint8(0), uint8(0), []byte(`{}`), uint16(0), "")
	f.Add(uint8(4), []byte(``), uint8(0), uint8(4), []byte(`{"object":"list"}`), uint16(0), "")
	f.Add(uint8(0), []byte(chat), uint8(4), uint8(0), []byte(`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`), uint16(5), "")
	// Customer ids the store refuses: braces (Redis hash tags), a space,
	// one too long.
	f.Add(uint8(0), []byte(chat), uint8(0), uint8(0), []byte(`{}`), uint16(0), "{x}")
	f.Add(uint8(0), []byte(chat), uint8(0), uint8(0), []byte(`{}`), uint16(0), " x")
	f.Add(uint8(0), []byte(chat), uint8(0), uint8(0), []byte(`{}`), uint16(0), strings.Repeat("x", ledger.MaxIDLength))

	f.Fuzz(func(t *testing.T, route uint8, reqBody []byte, status, ctype uint8, resBody []byte, split uint16, suffix string) {
		a := &answer{
			status:      fuzzStatuses[int(status)%len(fuzzStatuses)],
			contentType: fuzzContentTypes[int(ctype)%len(fuzzContentTypes)],
			body:        resBody,
			split:       int(split) % (len(resBody) + 1),
		}
		current.Store(a)
		// The customer's id may end in the fuzzer's suffix, after a dot
		// so that no two iterations share a customer ("cust-…-2" with
		// "8" would be the 28th's); one the store refuses must be
		// refused by the proxy too, before forwarding.
		customer := newCustomer()
		if suffix != "" {
			customer += "." + suffix
		}
		_, err := h.store.Credit(context.Background(), ledger.Credit{
			Customer: customer, Amount: mustMicros(t, "100"), Kind: ledger.KindGrant, Key: "fuzz",
		})
		var bad *ledger.InvalidCustomerError
		if err != nil && !errors.As(err, &bad) {
			t.Fatal(err)
		}
		before := calls.Load()
		req, err := http.NewRequest(http.MethodPost, h.proxy.URL+fuzzRoutes[int(route)%len(fuzzRoutes)], bytes.NewReader(reqBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tollgate-Customer", customer)
		res, err := fuzzClient.Do(req)
		if err != nil {
			if strings.ContainsFunc(customer, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
				return // not a header value: the client refuses to send it
			}
			t.Fatal(err)
		}
		got, readErr := io.ReadAll(res.Body)
		res.Body.Close()
		forwarded := calls.Load() != before
		// Every failure names the exchange.
		t.Logf("POST %s %q -> upstream %d %q %q; client got %d %q (read: %v)",
			req.URL.RequestURI(), reqBody, a.status, a.contentType, resBody, res.StatusCode, got, readErr)

		switch {
		case !forwarded && (res.StatusCode < 400 || res.StatusCode >= 500):
			t.Fatalf("not forwarded, answered %d (want a 4xx of tollgate's): %s", res.StatusCode, got)
		case forwarded && bad != nil:
			t.Fatalf("customer %q was refused by the store (%v), but the request was forwarded", customer, bad)
		case forwarded && res.StatusCode != a.status:
			t.Fatalf("the upstream answered %d, the client got %d: %s", a.status, res.StatusCode, got)
		}

		if bad != nil {
			return // the store keeps nothing for it
		}
		// Settled: nothing reserved (DESIGN promises it within a second
		// of the last byte; the check allows two, for a machine busy
		// fuzzing). Once nothing is, nothing changes any more: the
		// entries must add up to the balance, no charge may give
		// credits, and a request the upstream never saw or refused is
		// not charged.
		ctx := context.Background()
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			acct, err := h.store.Account(ctx, customer)
			if err != nil {
				t.Fatal(err)
			}
			if acct.Reserved == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("2 s after the exchange %s is still reserved", acct.Reserved)
			}
		}
		page, err := h.store.Entries(ctx, customer, "", ledger.MaxPageSize)
		if err != nil {
			t.Fatal(err)
		}
		acct, err := h.store.Account(ctx, customer)
		if err != nil {
			t.Fatal(err)
		}
		var sum money.Micros
		for _, e := range page.Entries {
			sum += e.Amount
			// DESIGN: upstream errors (non-2xx) cost nothing.
			if e.Kind == ledger.KindCharge && (e.Amount > 0 || !forwarded || a.status > 299) {
				t.Fatalf("forwarded %v, upstream status %d, charged %s: %+v", forwarded, a.status, e.Amount, e)
			}
		}
		if sum != acct.Balance || acct.Reserved != 0 {
			t.Fatalf("balance %s (%s reserved), entries sum to %s: %+v", acct.Balance, acct.Reserved, sum, page.Entries)
		}
	})
}
