package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/proxyconfig"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/proxy"
)

// sharedRedis is one redis-server for the package's Redis-backed tests
// that do not stop it; nil when redis-server is not installed.
var sharedRedis *redistest.Server

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the outage tests cause many.
	redis.SetLogger(quietRedis{})
	srv, err := redistest.Launch()
	if err == nil {
		sharedRedis = srv
	}
	code := m.Run()
	if srv != nil {
		srv.Close()
	}
	os.Exit(code)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

const (
	adminToken   = "admin-secret-token"
	clientKey    = "sk-client-must-not-leak"
	upstreamKey  = "sk-upstream-secret"
	anthropicKey = "sk-ant-upstream-secret"
	geminiKey    = "AIza-upstream-secret"
)

// testConfig is the configuration every harness starts from; UPSTREAM and
// DEAD are replaced by the fake upstream's URL and a closed port. Its
// store.timeout is generous: hundreds of concurrent requests under the
// race detector on a busy machine take longer than the default 500ms, and
// would be refused; the tests of store.timeout set it themselves.
const testConfig = `
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0", token: ` + adminToken + `}
store: {hold_ttl: 1m, timeout: 5s}
max_request_bytes: 65536
settle_timeout: 2s
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: UPSTREAM
    headers: {Authorization: "Bearer ` + upstreamKey + `"}
    max_output_tokens: 1000
    prices:
      gpt-4o: {input: "2.50", cached_input: "1.25", output: "10"}
  - path: /v1/messages
    api: anthropic.messages
    upstream: UPSTREAM
    headers: {x-api-key: "` + anthropicKey + `", anthropic-version: "2023-06-01"}
    prices:
      claude-sonnet-4-5: {input: "3", cached_input: "0.30", cache_write_input: "3.75", output: "15"}
  - path: /v1/responses
    api: openai.responses
    upstream: UPSTREAM
    prices:
      gpt-4.1: {input: "2", cached_input: "0.50", output: "8"}
  - path: /v1/embeddings
    api: openai.embeddings
    upstream: UPSTREAM
    prices:
      text-embedding-3-small: {input: "0.02"}
  - path: /v1/models
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.001"}
  - path: /dead/v1/chat/completions
    api: openai.chat
    upstream: DEAD
    prices:
      gpt-4o: {input: "2.50", output: "10"}
  - path: /v1beta/models/
    api: google.gemini
    upstream: UPSTREAM
    headers: {x-goog-api-key: "` + geminiKey + `"}
    max_output_tokens: 1000
    prices:
      gemini-2.5-flash: {input: "0.30", cached_input: "0.03", output: "2.50"}
`

// parseSettings builds the proxy's settings from yaml, a configuration
// file, with the placeholders replaced, as cmd/tollgate does.
func parseSettings(t testing.TB, yaml, upstream string) *proxy.Settings {
	t.Helper()
	yaml = strings.ReplaceAll(yaml, "UPSTREAM", upstream)
	yaml = strings.ReplaceAll(yaml, "DEAD", "http://"+closedAddr(t))
	cfg, err := config.Parse(strings.NewReader(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return proxyconfig.Settings(cfg)
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// seen is a request the fake upstream received.
type seen struct {
	Method, Path string
	RawQuery     string
	Header       http.Header
	Body         []byte
}

// upstream is a fake provider. By default it answers every route with the
// recorded responses in testdata, like the real APIs: JSON, or SSE flushed
// event by event when the body asks for "stream": true.
type upstream struct {
	*httptest.Server
	t       testing.TB
	mu      sync.Mutex
	reqs    []seen
	handler atomic.Pointer[func(w http.ResponseWriter, r *http.Request, body []byte)]
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{t: t}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
		u.mu.Unlock()
		if h := u.handler.Load(); h != nil {
			(*h)(w, r, body)
			return
		}
		recorded(t, w, r, body)
	}))
	t.Cleanup(u.Close)
	return u
}

// handle replaces the upstream's behaviour.
func (u *upstream) handle(h func(w http.ResponseWriter, r *http.Request, body []byte)) {
	u.handler.Store(&h)
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

func (u *upstream) last(t testing.TB) seen {
	t.Helper()
	reqs := u.requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1]
}

func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorded answers like the provider of r's path, from testdata.
func recorded(t testing.TB, w http.ResponseWriter, r *http.Request, body []byte) {
	stream := bytes.Contains(body, []byte(`"stream":true`))
	var name string
	switch r.URL.Path {
	case "/v1/chat/completions":
		name = "chat_completion.json"
		if stream {
			name = "chat_stream.sse"
		}
	case "/v1/messages":
		name = "anthropic_message.json"
		if stream {
			name = "anthropic_stream.sse"
		}
	case "/v1/responses":
		name = "responses_response.json"
		if stream {
			name = "responses_stream.sse"
		}
	case "/v1/embeddings":
		name = "embedding.json"
	case "/v1/models":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}`)
		return
	case "/v1beta/models/gemini-2.5-flash:generateContent":
		name = "gemini_generate.json"
	case "/v1beta/models/gemini-2.5-flash:streamGenerateContent":
		if r.URL.Query().Get("alt") == "sse" {
			writeChunks(w, "text/event-stream", testdata(t, "gemini_stream.sse"), "\r\n\r\n")
		} else {
			writeChunks(w, "application/json", testdata(t, "gemini_stream_array.json"), "\n,\r\n")
		}
		return
	default:
		http.NotFound(w, r)
		return
	}
	data := testdata(t, name)
	if strings.HasSuffix(name, ".sse") {
		writeSSE(w, data, 0)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

// writeSSE writes a recorded stream event by event, flushing each, with
// pause between events.
func writeSSE(w http.ResponseWriter, data []byte, pause time.Duration) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	for len(data) > 0 {
		i := bytes.Index(data, []byte("\n\n"))
		n := len(data)
		if i >= 0 {
			n = i + 2
		}
		w.Write(data[:n])
		fl.Flush()
		data = data[n:]
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

// writeChunks writes data as a streaming provider does, flushing after
// each sep (Gemini ends its events with CRLF CRLF, and streams a JSON
// array element by element).
func writeChunks(w http.ResponseWriter, contentType string, data []byte, sep string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	for len(data) > 0 {
		n := len(data)
		if i := bytes.Index(data, []byte(sep)); i >= 0 {
			n = i + len(sep)
		}
		w.Write(data[:n])
		fl.Flush()
		data = data[n:]
	}
}

// harness is a proxy and its admin API on httptest servers, in front of a
// fake upstream, metering into a real store.
type harness struct {
	t     testing.TB
	store ledger.Store
	srv   *proxy.Server
	proxy *httptest.Server
	admin *httptest.Server
	up    *upstream
	reg   *prometheus.Registry
	logs  *observer.ObservedLogs
}

type harnessOptions struct {
	store      ledger.Store // default: a bolt store in t.TempDir()
	yaml       string       // default testConfig
	upstream   *upstream    // default: a new one
	reconciler proxy.Reconciler
	webhook    http.Handler
	retryFor   time.Duration
	transport  http.RoundTripper // default: proxy.NewTransport()
	// acceptDataLoss serves POST /v1/store/accept-data-loss; default: the
	// store's AcceptDataLoss when it has one, as serve wires it.
	acceptDataLoss func(context.Context) error
	// now is the proxy's clock; default time.Now. A test that sets it
	// passes a store on the same clock.
	now func() time.Time
	// events serves GET /v1/events; default none (events off).
	events ledger.Outbox
}

func newHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	if o.store == nil {
		o.store = boltStore(t)
	}
	if o.yaml == "" {
		o.yaml = testConfig
	}
	if o.upstream == nil {
		o.upstream = newUpstream(t)
	}
	core, logs := observer.New(zap.DebugLevel)
	reg := prometheus.NewRegistry()
	set := parseSettings(t, o.yaml, o.upstream.URL)
	srv, err := proxy.New(set, o.store, proxy.Options{
		Logger:         zap.New(core),
		Registerer:     reg,
		SettleRetryFor: o.retryFor,
		Transport:      o.transport,
		Now:            o.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: o.store, srv: srv, up: o.upstream, reg: reg, logs: logs}
	h.proxy = httptest.NewServer(srv)
	if a, ok := o.store.(interface{ AcceptDataLoss(context.Context) error }); ok && o.acceptDataLoss == nil {
		o.acceptDataLoss = a.AcceptDataLoss
	}
	h.admin = httptest.NewServer(srv.AdminHandler(proxy.AdminOptions{
		Reconciler:     o.reconciler,
		Webhook:        o.webhook,
		Metrics:        promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		AcceptDataLoss: o.acceptDataLoss,
		Events:         o.events,
	}))
	t.Cleanup(func() {
		h.admin.Close()
		h.proxy.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
		h.noSecretsLogged()
	})
	return h
}

func boltStore(t testing.TB) *ledger.BoltStore {
	t.Helper()
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// redisClient returns a client of the shared test Redis, skipping (or
// failing under CI) without redis-server.
func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	if sharedRedis == nil {
		redistest.Require(t, false)
		t.Fatal("redis-server is installed but did not start")
	}
	return fastClient(sharedRedis.Addr)
}

// fastClient fails fast while Redis is down or hung, as serve configures
// it.
func fastClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 1, DialerRetries: 1, Protocol: 2, ContextTimeoutEnabled: true})
}

func redisStore(t testing.TB) *ledger.RedisStore {
	t.Helper()
	s := ledger.NewRedisStore(redisClient(t), ledger.Options{})
	t.Cleanup(func() { s.Close() })
	return s
}

// testLeases lease after two requests and give a lease back soon after
// the last, so that storms end with nothing reserved well within their
// wait.
var testLeases = ledger.LeaseOptions{MinRequests: 2, Idle: 200 * time.Millisecond, FlushInterval: 10 * time.Millisecond}

// leaseStore is redisStore with credit leases (ledger.LeaseStore) on opts'
// clock.
func leaseStore(t testing.TB, opts ledger.Options) *ledger.LeaseStore {
	t.Helper()
	s := ledger.NewLeaseStore(redisClient(t), opts, testLeases)
	t.Cleanup(func() { s.Close() })
	return s
}

var customerSeq atomic.Int64

// runID keeps customers of separate runs apart on a developer's own Redis
// (TOLLGATE_TEST_REDIS_ADDR).
var runID = fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)

// newCustomer returns a customer id no other test uses.
func newCustomer() string {
	return fmt.Sprintf("cust-%s-%d", runID, customerSeq.Add(1))
}

func mustMicros(t testing.TB, s string) money.Micros {
	t.Helper()
	m, err := money.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// grant credits customer through the store.
func (h *harness) grant(customer, amount string) {
	h.t.Helper()
	_, err := h.store.Credit(context.Background(), ledger.Credit{
		Customer: customer, Amount: mustMicros(h.t, amount), Kind: ledger.KindGrant,
		Key: fmt.Sprintf("grant-%d", customerSeq.Add(1)),
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) account(customer string) ledger.Account {
	h.t.Helper()
	a, err := h.store.Account(context.Background(), customer)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// settled waits until customer has n charges and nothing reserved, which
// DESIGN promises within 1 s of the last byte, and returns the charges.
func (h *harness) settled(customer string, n int) []ledger.Entry {
	h.t.Helper()
	return waitSettled(h.t, h.store, customer, n, time.Second)
}

// chargesNow returns customer's charges (of the newest page) as they
// stand, without waiting.
func chargesNow(t testing.TB, st ledger.Store, customer string) []ledger.Entry {
	t.Helper()
	p, err := st.Entries(context.Background(), customer, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	var charges []ledger.Entry
	for _, e := range p.Entries {
		if e.Kind == ledger.KindCharge {
			charges = append(charges, e)
		}
	}
	return charges
}

func waitSettled(t testing.TB, st ledger.Store, customer string, n int, within time.Duration) []ledger.Entry {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a, err := st.Account(context.Background(), customer)
		if err != nil {
			t.Fatal(err)
		}
		charges := chargesNow(t, st, customer)
		if len(charges) == n && a.Reserved == 0 {
			return charges
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %s: %d charges (want %d), %s reserved (want 0)", customer, within, len(charges), n, a.Reserved)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// request is one call to the proxy.
type request struct {
	path     string
	customer string
	body     string
	header   map[string]string
}

// do sends req to the proxy and returns the response with its body read.
func (h *harness) do(req request) (*http.Response, []byte) {
	h.t.Helper()
	return doRequest(h.t, h.proxy.URL, req)
}

func doRequest(t testing.TB, base string, req request) (*http.Response, []byte) {
	t.Helper()
	hr, err := http.NewRequest(http.MethodPost, base+req.path, strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+clientKey)
	if req.customer != "" {
		hr.Header.Set("X-Tollgate-Customer", req.customer)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

// apiError is the OpenAI error shape, with tollgate's code (and on a 402
// the available and required credits).
type apiError struct {
	Error struct {
		Message   string `json:"message"`
		Type      string `json:"type"`
		Code      string `json:"code"`
		Available string `json:"available"`
		Required  string `json:"required"`
	} `json:"error"`
}

func decodeError(t testing.TB, body []byte) apiError {
	t.Helper()
	var e apiError
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("not the OpenAI error shape: %v: %s", err, body)
	}
	return e
}

// metric returns the value of the series name{labels}, 0 when absent.
func (h *harness) metric(name string, labels map[string]string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// noSecretsLogged fails the test if a key or token reached the logs.
func (h *harness) noSecretsLogged() {
	h.t.Helper()
	for _, e := range h.logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		for _, secret := range []string{clientKey, upstreamKey, anthropicKey, adminToken} {
			if strings.Contains(line, secret) {
				h.t.Errorf("a secret was logged: %s", line)
			}
		}
	}
}

// eventually is metric, polled until it equals want or a second passes:
// metrics follow a settlement a moment after the ledger does.
func (h *harness) eventually(name string, labels map[string]string, want float64) {
	h.t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got := h.metric(name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("%s%v = %v, want %v", name, labels, got, want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chatRequest is a gpt-4o chat completion for customer on ctx, extra
// spliced into the body (e.g. `,"stream":true`), for tests that cancel it.
func (h *harness) chatRequest(ctx context.Context, customer, extra string) *http.Request {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", extra)))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("X-Tollgate-Customer", customer)
	return req
}

// chatBody is a small chat request for model.
func chatBody(model string, extra string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"Hello!"}]` + extra + `}`
}

// configWith returns testConfig with old replaced by new, and fails the
// test when testConfig has no old: a setting a test depends on must not
// silently stay at its shared value when testConfig changes.
func configWith(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(testConfig, old) {
		t.Fatalf("testConfig has no %q to replace", old)
	}
	return strings.Replace(testConfig, old, new, 1)
}
