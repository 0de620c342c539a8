package proxy_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/proxy"
)

// refusal402 is what a 402 told the client, in either dialect.
type refusal402 struct {
	message, available, required string
	retry, retryAfter            string // x-should-retry, Retry-After
}

func decode402(t *testing.T, rt dialectRoute, res *http.Response, data []byte) refusal402 {
	t.Helper()
	typ := "insufficient_quota"
	switch {
	case rt.google:
		typ = "RESOURCE_EXHAUSTED"
	case rt.anthropic:
		typ = "billing_error"
	}
	msg := wantDialectError(t, rt, res, data, http.StatusPaymentRequired, "insufficient_credits", typ)
	r := refusal402{message: msg, retry: res.Header.Get("X-Should-Retry"), retryAfter: res.Header.Get("Retry-After")}
	switch {
	case rt.google:
		md := decodeGoogleError(t, data).Error.Details[0].Metadata
		r.available, r.required = md["available"], md["required"]
	case rt.anthropic:
		e := decodeAnthropicError(t, data)
		r.available, r.required = e.Error.Available, e.Error.Required
	default:
		e := decodeError(t, data)
		r.available, r.required = e.Error.Available, e.Error.Required
	}
	return r
}

// TestInsufficientCredits: a 402 carries the available and required
// credits in its error object, in each dialect; it tells SDKs to retry,
// after HeldBackRetryAfter, only when the balance covers the request and
// the holds of the customer's other requests in flight are what stand in
// the way, and not to retry when the balance itself is short, with or
// without holds.
func TestInsufficientCredits(t *testing.T) {
	up := newUpstream(t)
	// A request carrying X-Test-Block stays open upstream until a send on
	// release lets it go: a request in flight, holding its reservation.
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("X-Test-Block") != "" {
			entered <- struct{}{}
			<-release
		}
		recorded(t, w, r, body)
	})
	h := newHarness(t, harnessOptions{upstream: up})
	for _, rt := range dialectRoutes {
		t.Run(rt.name, func(t *testing.T) {
			cust := newCustomer()
			h.grant(cust, "0.000001")
			req := request{path: rt.path, customer: cust, body: rt.body(rt.model, "")}

			// The balance alone is short: no retry.
			res, data := h.do(req)
			got := decode402(t, rt, res, data)
			required := mustMicros(t, got.required)
			want := refusal402{
				message:   "insufficient credits: 0.000001 available, " + required.String() + " required (this request's worst-case cost); add credits, or lower max_tokens",
				available: "0.000001", required: required.String(), retry: "false",
			}
			if got != want || required <= 1 {
				t.Fatalf("balance short:\n got %+v\nwant %+v", got, want)
			}

			// The balance covers one request and a half: a second request
			// while the first is in flight is refused, and may retry.
			h.grant(cust, (required + required/2 - 1).String())
			var wg sync.WaitGroup
			wg.Add(1)
			var first *http.Response
			go func() {
				defer wg.Done()
				first, _ = doRequest(t, h.proxy.URL, request{path: rt.path, customer: cust, body: req.body, header: map[string]string{"X-Test-Block": "1"}})
			}()
			<-entered
			res, data = h.do(req)
			got = decode402(t, rt, res, data)
			avail := required / 2
			balance := required + required/2
			want = refusal402{
				message: "insufficient credits: " + avail.String() + " available, " + required.String() +
					" required (this request's worst-case cost); the balance covers it, but this customer's requests in flight hold " +
					required.String() + ": retry when they finish, or lower max_tokens",
				available: avail.String(), required: required.String(), retry: "true", retryAfter: "2",
			}
			if got != want {
				t.Errorf("held back by a request in flight (balance %s):\n got %+v\nwant %+v", balance, got, want)
			}
			release <- struct{}{}
			wg.Wait()
			if first.StatusCode != http.StatusOK {
				t.Fatalf("the request in flight: %d", first.StatusCode)
			}
			h.settled(cust, 1)

			// Another hold in flight, but the balance is short of the
			// request anyway: retrying cannot help.
			short := newCustomer()
			h.grant(short, (required - 1).String())
			if err := h.store.Reserve(context.Background(), short, "other-request", 1, time.Minute); err != nil {
				t.Fatal(err)
			}
			res, data = h.do(request{path: rt.path, customer: short, body: req.body})
			got = decode402(t, rt, res, data)
			want = refusal402{
				message:   "insufficient credits: " + (required - 2).String() + " available, " + required.String() + " required (this request's worst-case cost); add credits, or lower max_tokens",
				available: (required - 2).String(), required: required.String(), retry: "false",
			}
			if got != want {
				t.Errorf("balance short with a hold open:\n got %+v\nwant %+v", got, want)
			}
			if err := h.store.Release(context.Background(), short, "other-request"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if proxy.HeldBackRetryAfter != 2*time.Second {
		t.Errorf("HeldBackRetryAfter %s; the wanted Retry-After above is 2", proxy.HeldBackRetryAfter)
	}
}
