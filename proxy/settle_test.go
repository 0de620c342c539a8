package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// flakyStore is a real store whose Settle fails while fail says so.
type flakyStore struct {
	ledger.Store
	settles atomic.Int64
	fail    func(n int64) error // n counts Settle calls from 1
}

func (s *flakyStore) Settle(ctx context.Context, customer, holdID string, actual money.Micros, c ledger.Charge) (ledger.Entry, error) {
	if err := s.fail(s.settles.Add(1)); err != nil {
		return ledger.Entry{}, err
	}
	return s.Store.Settle(ctx, customer, holdID, actual, c)
}

var errDown = fmt.Errorf("settle: %w: connection refused", ledger.ErrStoreUnavailable)

// TestSettleRetries: a settlement that meets a store outage is retried
// until it commits.
func TestSettleRetries(t *testing.T) {
	st := &flakyStore{Store: boltStore(t), fail: func(n int64) error {
		if n <= 3 {
			return errDown
		}
		return nil
	}}
	h := newHarness(t, harnessOptions{store: st})
	cust := newCustomer()
	h.grant(cust, "10")
	if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")}); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	c := waitSettled(t, st, cust, 1, 3*time.Second)[0]
	if c.Amount != -mustMicros(t, "0.003253") {
		t.Errorf("charge %s", -c.Amount)
	}
	h.eventually("tollgate_settle_retries_total", nil, 3)
	if got := h.metric("tollgate_settle_failures_total", nil); got != 0 {
		t.Errorf("tollgate_settle_failures_total %v", got)
	}
	if n := h.logs.FilterMessage("settlement failed; retrying").Len(); n != 1 {
		t.Errorf("%d retry warnings, want 1 (the first)", n)
	}
}

// TestSettleGivesUp: a settlement that cannot succeed is logged with
// everything needed to charge it by hand, and counted.
func TestSettleGivesUp(t *testing.T) {
	tests := []struct {
		name  string
		fail  error
		drain bool // give up because shutdown ran out of time, not because retrying cannot help
	}{
		{"hold lost", fmt.Errorf("settle: %w", ledger.ErrHoldNotFound), false},
		{"store down through shutdown", errDown, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &flakyStore{Store: boltStore(t), fail: func(int64) error { return tc.fail }}
			h := newHarness(t, harnessOptions{store: st})
			cust := newCustomer()
			h.grant(cust, "10")
			res, _ := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
			id := res.Header.Get("X-Tollgate-Request-Id")
			if tc.drain {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				if err := h.srv.Drain(ctx); err != nil {
					t.Errorf("drain: %v", err)
				}
			}
			h.eventually("tollgate_settle_failures_total", nil, 1)
			logs := h.logs.FilterMessageSnippet("settlement failed; the charge is NOT recorded").All()
			if len(logs) != 1 {
				t.Fatalf("%d settlement failure logs", len(logs))
			}
			f := logs[0].ContextMap()
			want := map[string]any{
				"customer": cust, "hold": id, "amount": "0.003253", "route": "/v1/chat/completions", "model": "gpt-4o",
				"input_tokens": int64(1117), "output_tokens": int64(46),
				"apply": fmt.Sprintf("tollgate credit %s -0.003253 --key settle-%s --reason 'unsettled request %s'", cust, id, id),
			}
			for k, v := range want {
				if f[k] != v {
					t.Errorf("log field %s = %v, want %v", k, f[k], v)
				}
			}
		})
	}
}

// TestRedisOutage: while Redis is down the proxy answers 503 and is not
// ready; when Redis returns with its data (AOF), so does service, with no
// operator needed. (A Redis that returns empty is TestRedisDataLoss.)
func TestRedisOutage(t *testing.T) {
	srv := redistest.StartOwnWith(t, "--appendonly", "yes")
	st := ledger.NewRedisStore(fastClient(srv.Addr), ledger.Options{})
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, harnessOptions{store: st})
	cust := newCustomer()
	body := chatBody("gpt-4o", "")
	waitReady(t, h)
	h.grant(cust, "10")
	if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	h.settled(cust, 1)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body})
	if res.StatusCode != 503 || decodeError(t, data).Error.Code != "billing_unavailable" {
		t.Fatalf("with Redis down: %d %s", res.StatusCode, data)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the 503 took %s; it should come at once", d)
	}
	if res, _ := getURL(t, h.admin.URL+"/readyz", ""); res.StatusCode != 503 {
		t.Errorf("/readyz %d with Redis down", res.StatusCode)
	}
	if res, _ := getURL(t, h.admin.URL+"/healthz", ""); res.StatusCode != 200 {
		t.Errorf("/healthz %d: liveness must not depend on Redis", res.StatusCode)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h)
	if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != 200 {
		t.Fatalf("after Redis returned: %d %s", res.StatusCode, data)
	}
	h.settled(cust, 2) // the balance and the first charge survived
	wantSumIsBalance(t, st, cust)
}

// TestReload: a new price applies to the next request without dropping
// any in flight; invalid settings are refused and the running ones kept.
// (That settings needing a restart keep their running values is
// cmd/tollgate's TestReloadKeepsRestartSettings.)
func TestReload(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	h.grant(cust, "100")
	body := chatBody("gpt-4o", "")

	// Traffic keeps flowing while the configuration changes under it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var during atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("X-Tollgate-Customer", cust)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					t.Errorf("status %d during a reload", res.StatusCode)
				}
				during.Add(1)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	dearer := parseSettings(t, configWith(t, `output: "10"`, `output: "20"`), h.up.URL)
	if err := h.srv.Reload(dearer); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	n := int(during.Load())
	h.settled(cust, n)

	check := func(want string) {
		t.Helper()
		other := newCustomer()
		h.grant(other, "1")
		if res, data := h.do(request{path: "/v1/chat/completions", customer: other, body: body}); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, data)
		}
		if c := h.settled(other, 1)[0]; c.Amount != -mustMicros(t, want) {
			t.Errorf("charged %s, want %s", -c.Amount, want)
		}
	}
	// 1117 input at 2.50 and 46 output at 20 per 1M.
	check("0.003713")

	bad := *dearer
	bad.MaxRequestBytes = -1
	if err := h.srv.Reload(&bad); err == nil {
		t.Error("an invalid configuration was accepted")
	}
	if err := h.srv.Reload(nil); err == nil {
		t.Error("a nil configuration was accepted")
	}
	check("0.003713")
	h.eventually("tollgate_config_reloads_total", map[string]string{"result": "rejected"}, 2)

	longer := *dearer
	longer.HoldTTL = time.Hour
	if err := h.srv.Reload(&longer); err != nil {
		t.Fatal(err)
	}
}

// ledgerSum returns the sum of every entry of customer.
func ledgerSum(t *testing.T, st ledger.Store, customer string) money.Micros {
	t.Helper()
	var sum money.Micros
	before := ""
	for {
		p, err := st.Entries(context.Background(), customer, before, ledger.MaxPageSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			sum += e.Amount
		}
		if p.Next == "" {
			return sum
		}
		before = p.Next
	}
}

// absurdCompletion is a chat completion reporting 10^15 output tokens (the
// meter reads counts up to about 1.15 × 10^15; larger ones are not counts).
const absurdCompletion = `{"id":"chatcmpl-1","object":"chat.completion","created":1741570283,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1000000000000000,"total_tokens":1000000000000010}}`

const absurdOutput = 1_000_000_000_000_000

// TestAbsurdUsageIsCharged: a provider reporting usage whose cost the
// ledger cannot hold (beyond ledger.MaxAmount, or beyond int64 micro-credits
// altogether) is still charged: the most the ledger accepts, with an error
// log naming the request and the true cost. The hold never lingers and
// the balance stays the sum of the ledger.
func TestAbsurdUsageIsCharged(t *testing.T) {
	stores := []struct {
		name string
		open func(t *testing.T) ledger.Store
	}{
		{"bolt", func(t *testing.T) ledger.Store { return boltStore(t) }},
		{"redis", func(t *testing.T) ledger.Store { return redisStore(t) }},
	}
	tests := []struct {
		name   string
		output string // the chat route's output price, per 1M tokens
		cost   string // what the log says the usage costs
	}{
		// 10^15 output tokens at 10 micro-credits each, plus 10 input
		// tokens at 2.5: fits in int64, not in the ledger (2^53-1).
		{"beyond the ledger's maximum", "10", "10000000000.000025"},
		// At 100,000 micro-credits a token, 10^20 micro-credits do not fit
		// in int64 (meter.ErrCostRange).
		{"beyond int64", "100000", "more than 9223372036854.775807"},
	}
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					st := sc.open(t)
					h := newHarness(t, harnessOptions{store: st, yaml: configWith(t, `output: "10"`, `output: "`+tc.output+`"`)})
					h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
						w.Header().Set("Content-Type", "application/json")
						io.WriteString(w, absurdCompletion)
					})
					cust := newCustomer()
					h.grant(cust, "1000")
					res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
					if res.StatusCode != 200 {
						t.Fatalf("%d %s", res.StatusCode, data)
					}
					id := res.Header.Get("X-Tollgate-Request-Id")
					c := waitSettled(t, st, cust, 1, 3*time.Second)[0]
					if c.Amount != -ledger.MaxAmount || c.Reference != id || c.OutputTokens != absurdOutput {
						t.Errorf("charge %s for %d output tokens (reference %s), want %s for %d (%s)", -c.Amount, c.OutputTokens, c.Reference, ledger.MaxAmount, absurdOutput, id)
					}
					a := h.account(cust)
					if want := mustMicros(t, "1000") - ledger.MaxAmount; a.Balance != want || a.Reserved != 0 {
						t.Errorf("account %+v, want balance %s and nothing reserved", a, want)
					}
					if sum := ledgerSum(t, st, cust); sum != a.Balance {
						t.Errorf("ledger sum %s, balance %s", sum, a.Balance)
					}
					logs := h.logs.FilterMessageSnippet("costs more than the ledger can record").All()
					if len(logs) != 1 {
						t.Fatalf("%d error logs about the cost, want 1", len(logs))
					}
					f := logs[0].ContextMap()
					for k, v := range map[string]any{"request": id, "customer": cust, "cost": tc.cost, "charged": ledger.MaxAmount.String()} {
						if f[k] != v {
							t.Errorf("log field %s = %v, want %v", k, f[k], v)
						}
					}
					if got := h.metric("tollgate_settle_failures_total", nil); got != 0 {
						t.Errorf("tollgate_settle_failures_total %v", got)
					}
				})
			}

			// Two requests reserved together both report such usage: the
			// first charge takes the balance near -MaxAmount, so the
			// second cannot charge MaxAmount too. It charges what is left
			// down to -MaxAmount, never nothing.
			t.Run("two at once, down to the ledger's floor", func(t *testing.T) {
				st := sc.open(t)
				h := newHarness(t, harnessOptions{store: st})
				var arrived sync.WaitGroup
				arrived.Add(2)
				h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
					arrived.Done()
					arrived.Wait() // both holds are taken before either settles
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, absurdCompletion)
				})
				cust := newCustomer()
				h.grant(cust, "1000")
				var wg sync.WaitGroup
				for range 2 {
					wg.Go(func() {
						res, data := doRequest(t, h.proxy.URL, request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
						if res.StatusCode != 200 {
							t.Errorf("%d %s", res.StatusCode, data)
						}
					})
				}
				wg.Wait()
				charges := waitSettled(t, st, cust, 2, 3*time.Second)
				got := []money.Micros{-charges[0].Amount, -charges[1].Amount}
				if !(got[0] == mustMicros(t, "1000") && got[1] == ledger.MaxAmount || got[1] == mustMicros(t, "1000") && got[0] == ledger.MaxAmount) {
					t.Errorf("charges %v, want %s and 1000.000000", got, ledger.MaxAmount)
				}
				a := h.account(cust)
				if a.Balance != -ledger.MaxAmount || a.Reserved != 0 {
					t.Errorf("account %+v, want balance -%s and nothing reserved", a, ledger.MaxAmount)
				}
				if sum := ledgerSum(t, st, cust); sum != a.Balance {
					t.Errorf("ledger sum %s, balance %s", sum, a.Balance)
				}
				if n := h.logs.FilterMessageSnippet("the ledger's floor").Len(); n != 1 {
					t.Errorf("%d error logs about the floor, want 1", n)
				}
				if got := h.metric("tollgate_settle_failures_total", nil); got != 0 {
					t.Errorf("tollgate_settle_failures_total %v", got)
				}
			})
		})
	}
}
