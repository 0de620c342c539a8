package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// storeClock is a ledger store's clock that moves only when advanced.
type storeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *storeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *storeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// renewals is a real store that records the Extend calls made to it: how
// many, and for each hold the store time of its latest renewal.
type renewals struct {
	ledger.Store
	now     func() time.Time
	mu      sync.Mutex
	calls   int
	renewed map[string]time.Time
}

func (s *renewals) Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error {
	at := s.now()
	err := s.Store.Extend(ctx, customer, holdID, ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err == nil && at.After(s.renewed[holdID]) {
		s.renewed[holdID] = at
	}
	return err
}

func (s *renewals) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// waitRenewed waits until every hold in holds was renewed at store time
// at or after at, and reports whether that happened within a few seconds.
func (s *renewals) waitRenewed(holds []string, at time.Time) bool {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		all := true
		for _, h := range holds {
			if s.renewed[h].Before(at) {
				all = false
			}
		}
		s.mu.Unlock()
		if all {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

func newRenewals(t *testing.T, clock *storeClock) *renewals {
	t.Helper()
	st, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &renewals{Store: st, now: clock.Now, renewed: map[string]time.Time{}}
}

// gatedStream answers a streaming chat request with the first event of
// the recorded stream, then holds the stream open until release is closed
// (or the request ends), then sends the rest. Other requests are answered
// as recorded.
func gatedStream(t *testing.T, release <-chan struct{}) func(w http.ResponseWriter, r *http.Request, body []byte) {
	stream := testdata(t, "chat_stream.sse")
	first := bytes.Index(stream, []byte("\n\n")) + 2
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			recorded(t, w, r, body)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(stream[:first])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(stream[first:])
	}
}

// openStream starts a streaming request and returns its hold id once the
// first event arrived, and a channel that yields the rest of the body.
func openStream(t *testing.T, h *harness, customer, body string) (string, <-chan []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tollgate-Customer", customer)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Fatalf("stream refused: %d %s", res.StatusCode, data)
	}
	buf := make([]byte, 4096)
	if _, err := res.Body.Read(buf); err != nil {
		t.Fatalf("first event: %v", err)
	}
	rest := make(chan []byte, 1)
	go func() {
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		rest <- data
	}()
	return res.Header.Get("X-Tollgate-Request-Id"), rest
}

// TestLongStreamsKeepTheirHolds: with hold_ttl far shorter than the
// streams, the balance covers two streams' holds; while they run, store
// time moves well past hold_ttl, and six more requests are refused,
// because tollgate renews the open holds. Without renewal the holds
// expired and all six were admitted, spending credits already held.
func TestLongStreamsKeepTheirHolds(t *testing.T) {
	clock := &storeClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	st := newRenewals(t, clock)
	yaml := configWith(t, "hold_ttl: 1m", "hold_ttl: 300ms")
	h := newHarness(t, harnessOptions{store: st, yaml: yaml})
	release := make(chan struct{})
	h.up.handle(gatedStream(t, release))

	body := chatBody("gpt-4o", `,"stream":true`)
	hold := reservation(body, 1000)
	cust := newCustomer()
	h.grant(cust, (2 * hold).String())
	var holds []string
	var rests []<-chan []byte
	for range 2 {
		id, rest := openStream(t, h, cust, body)
		holds, rests = append(holds, id), append(rests, rest)
	}

	// Store time moves 1.2s (four hold_ttls) in steps shorter than
	// hold_ttl, each followed by the renewal of both holds that tollgate
	// makes every hold_ttl/3 of real time.
	for range 6 {
		clock.Advance(200 * time.Millisecond)
		if !st.waitRenewed(holds, clock.Now()) {
			t.Logf("the open holds were not renewed at store time %s", clock.Now().Format(time.StampMilli))
		}
	}
	if a := h.account(cust); a.Reserved != 2*hold {
		t.Errorf("reserved %s while both streams are open, want %s", a.Reserved, 2*hold)
	}
	admitted := 0
	for range 6 {
		res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
		switch res.StatusCode {
		case http.StatusOK:
			admitted++
		case http.StatusPaymentRequired:
		default:
			t.Errorf("status %d: %s", res.StatusCode, data)
		}
	}
	if admitted != 0 {
		t.Errorf("%d of 6 requests admitted while two open streams held the whole balance", admitted)
	}

	close(release)
	for _, rest := range rests {
		<-rest
	}
	charges := h.settled(cust, 2+admitted)
	var spent int64
	for _, c := range charges {
		spent -= int64(c.Amount)
	}
	if a := h.account(cust); int64(a.Balance) != int64(2*hold)-spent {
		t.Errorf("balance %s after charges of %d micro-credits", a.Balance, spent)
	}
	if got := h.metric("tollgate_hold_renewals_total", map[string]string{"result": "renewed"}); got < 12 {
		t.Errorf("tollgate_hold_renewals_total{result=renewed} = %v, want at least 12", got)
	}
}

// TestShortRequestsAreNotRenewed: a request that ends before hold_ttl/3
// costs no store call beyond its reservation and settlement.
func TestShortRequestsAreNotRenewed(t *testing.T) {
	clock := &storeClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	st := newRenewals(t, clock)
	h := newHarness(t, harnessOptions{store: st}) // hold_ttl 1m: renewals every 20s
	cust := newCustomer()
	h.grant(cust, "10")
	for _, body := range []string{chatBody("gpt-4o", ""), chatBody("gpt-4o", `,"stream":true`)} {
		for range 10 {
			if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", res.StatusCode, data)
			}
		}
	}
	h.settled(cust, 20)
	if n := st.count(); n != 0 {
		t.Errorf("%d Extend calls for requests far shorter than hold_ttl/3, want 0", n)
	}
}

// TestMaxRequestDuration: a request still open at max_request_duration is
// cut and charged for what it produced — a stream for its streamed text,
// a request with no answer yet for its prompt, with 504 request_timeout —
// and the upstream request is cancelled.
func TestMaxRequestDuration(t *testing.T) {
	yaml := configWith(t, "settle_timeout: 2s", "settle_timeout: 2s\nmax_request_duration: 300ms")
	h := newHarness(t, harnessOptions{yaml: yaml})
	cancelled := make(chan struct{}, 2)
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}]}\n\n")
			w.(http.Flusher).Flush()
		}
		select { // a stream that never ends, or an answer that never comes
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	})

	t.Run("stream", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", `,"stream":true`)))
		req.Header.Set("X-Tollgate-Customer", cust)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil {
			t.Error("the client saw a clean end of a stream tollgate cut")
		}
		if !bytes.Contains(data, []byte("Hello there")) {
			t.Errorf("the client did not get the text streamed before the cut: %q", data)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the stream was cut after %s", d)
		}
		c := h.settled(cust, 1)[0]
		if c.OutputTokens != 3 || c.Amount >= 0 { // "Hello there": 11 bytes → 3 tokens
			t.Errorf("charge %+v; want the streamed text charged", c)
		}
		waitCancelled(t, cancelled)
	})

	t.Run("no answer", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		body := chatBody("gpt-4o", "")
		res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body})
		if res.StatusCode != http.StatusGatewayTimeout || decodeError(t, data).Error.Code != "request_timeout" {
			t.Fatalf("status %d %s; want 504 request_timeout", res.StatusCode, data)
		}
		if res.Header.Get("X-Tollgate-Request-Id") == "" {
			t.Error("no X-Tollgate-Request-Id on the 504")
		}
		c := h.settled(cust, 1)[0]
		if c.InputTokens == 0 || c.OutputTokens != 0 || c.Amount >= 0 {
			t.Errorf("charge %+v; want the prompt estimate", c)
		}
		waitCancelled(t, cancelled)
	})
	h.eventually("tollgate_requests_cut_total", nil, 2)
}

func waitCancelled(t *testing.T, cancelled <-chan struct{}) {
	t.Helper()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not cancelled")
	}
}
