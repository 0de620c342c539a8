package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v79/webhook"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

const (
	serveToken    = "serve-test-admin-token"
	webhookSecret = "whsec_serve_test"
)

// Responses of the fake provider. The JSON completion uses 100 input and
// 20 output tokens: 0.000450 at the test prices (2.50 and 10 per 1M).
const (
	completionJSON = `{"id":"chatcmpl-1","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120}}`
	completionCost = "0.000450"
	chatRequest    = `{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}]}`
	streamRequest  = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hello!"}]}`
)

// chunk is one SSE event of a chat stream carrying text.
func chunk(text string) string {
	return fmt.Sprintf("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", text)
}

const usageChunk = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":20,\"total_tokens\":120}}\n\n"

// fakeProvider answers chat completions: JSON, or a stream of events
// written every pause and ending with the usage chunk. With endless set,
// a stream never ends on its own.
type fakeProvider struct {
	*httptest.Server
	pause     time.Duration
	events    int
	endless   bool
	cancelled chan struct{} // receives when a stream's request is cancelled
}

func newFakeProvider(t *testing.T) *fakeProvider {
	p := &fakeProvider{events: 3, cancelled: make(chan struct{}, 16)}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, completionJSON)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := 0; p.endless || i < p.events; i++ {
			io.WriteString(w, chunk(fmt.Sprintf("word%d ", i)))
			fl.Flush()
			select {
			case <-time.After(p.pause):
			case <-r.Context().Done():
				p.cancelled <- struct{}{}
				return
			}
		}
		io.WriteString(w, usageChunk+"data: [DONE]\n\n")
	}))
	t.Cleanup(p.Close)
	return p
}

// writeConfig writes a configuration for the fake provider into dir and
// returns its path. store is the store section's body.
func writeConfig(t *testing.T, dir, upstream, store, extra, outputPrice string) string {
	t.Helper()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0", token: %s}
store: {%s}
settle_timeout: 2s
%s
stripe: {webhook_secret: %s, livemode: false}
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: %s
    headers: {Authorization: "Bearer sk-provider"}
    max_output_tokens: 1000
    prices:
      gpt-4o: {input: "2.50", output: "%s"}
`, serveToken, store, extra, webhookSecret, upstream, outputPrice)
	path := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func boltSection(dir string) string {
	return fmt.Sprintf("path: %q, hold_ttl: 1m", filepath.Join(dir, "tollgate.db"))
}

// syncBuffer is a bytes.Buffer safe for the goroutines of serve.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// served is a `tollgate serve` running in this process.
type served struct {
	proxy, admin   string
	stdout, stderr *syncBuffer
	stop           context.CancelFunc
	done           chan error
}

// startServe runs `tollgate serve --config path` until the test ends or
// stop is called.
func startServe(t *testing.T, path string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{stdout: &syncBuffer{}, stderr: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- run(ctx, []string{"serve", "--config", path, "--log-level", "debug"}, s.stdout, s.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := s.stdout.String()
		s.proxy, s.admin = listenAddr(out, "proxy"), listenAddr(out, "admin")
		if s.proxy != "" && s.admin != "" {
			return s
		}
		select {
		case err := <-s.done:
			t.Fatalf("serve exited: %v\n%s", err, s.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not print its addresses:\n%s\n%s", out, s.stderr.String())
		}
	}
}

// wait stops serve as SIGTERM would and returns run's error.
func (s *served) wait(t *testing.T) error {
	t.Helper()
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s")
		return nil
	}
}

// listenAddr finds "tollgate: <name> listening on URL" in out.
func listenAddr(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "tollgate: "+name+" listening on "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// chat sends a chat request for customer to the proxy at base.
func chat(t *testing.T, base, customer, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tollgate-Customer", customer)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, data
}

// adminAccount reads a customer's account through the admin API.
func adminAccount(t *testing.T, base, customer string) ledger.Account {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/customers/"+customer, nil)
	req.Header.Set("Authorization", "Bearer "+serveToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var a ledger.Account
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || res.StatusCode != 200 {
		t.Fatalf("account: %d %v", res.StatusCode, err)
	}
	return a
}

// adminCredit grants credits through the admin API.
func adminCredit(t *testing.T, base, customer, amount string) {
	t.Helper()
	body := fmt.Sprintf(`{"amount":%q,"idempotency_key":"grant-%d"}`, amount, time.Now().UnixNano())
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/customers/"+customer+"/credits", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+serveToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("credit: %d %s", res.StatusCode, data)
	}
}

// waitAccount polls the admin API until cond holds for customer's account.
func waitAccount(t *testing.T, base, customer string, within time.Duration, cond func(ledger.Account) bool) ledger.Account {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a := adminAccount(t, base, customer)
		if cond(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("account after %s: %+v", within, a)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openLedger opens a bolt store file for checking after serve stopped.
func openLedger(t *testing.T, path string) *ledger.BoltStore {
	t.Helper()
	st, err := ledger.OpenBolt(path, ledger.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func mustParse(t *testing.T, s string) money.Micros {
	t.Helper()
	m, err := money.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestServeEndToEnd runs `tollgate serve` on 127.0.0.1:0 and uses it the
// way the README does: credit a customer with the CLI, send requests
// through the proxy, read the balance and ledger, receive a Stripe
// webhook, stop cleanly.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	up := newFakeProvider(t)
	path := writeConfig(t, dir, up.URL, boltSection(dir), "", "10")
	s := startServe(t, path)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", serveToken)

	out, stderr, code := runCLI(t, "credit", "acme", "10", "--key", "welcome-acme", "--admin", s.admin)
	if code != 0 || out != "credited 10.000000 to acme; balance after: 10.000000 (entry 1)\n" {
		t.Fatalf("credit: exit %d %q %q", code, out, stderr)
	}
	res, data := chat(t, s.proxy, "acme", chatRequest)
	if res.StatusCode != 200 || string(data) != completionJSON {
		t.Fatalf("chat: %d %s", res.StatusCode, data)
	}
	want := mustParse(t, "10") - mustParse(t, completionCost)
	waitAccount(t, s.admin, "acme", time.Second, func(a ledger.Account) bool { return a.Balance == want && a.Reserved == 0 })

	out, _, code = runCLI(t, "balance", "acme", "--admin", s.admin)
	if code != 0 || !strings.Contains(out, "balance    "+want.String()) {
		t.Errorf("balance: %q", out)
	}
	// A promotion that expires and is spent before the welcome credits.
	out, stderr, code = runCLI(t, "credit", "acme", "2", "--key", "promo-acme", "--expires-in", "720h", "--priority", "10", "--admin", s.admin)
	if code != 0 || out != "credited 2.000000 to acme; balance after: "+(want+mustParse(t, "2")).String()+" (entry 3)\n" {
		t.Fatalf("credit a promotion: exit %d %q %q", code, out, stderr)
	}
	out, _, code = runCLI(t, "lots", "acme", "--admin", s.admin)
	lines := strings.Split(out, "\n")
	if code != 0 || len(lines) != 4 || !slices.Equal(strings.Fields(lines[1])[:5], []string{"3", "grant", "2.000000", "2.000000", "10"}) ||
		!slices.Equal(strings.Fields(lines[2]), []string{"1", "grant", want.String(), "10.000000", "50", "never", "welcome-acme"}) {
		t.Errorf("lots: %q", out)
	}
	out, _, code = runCLI(t, "balance", "acme", "--admin", s.admin)
	if code != 0 || !strings.Contains(out, "next expiry  2.000000 at ") {
		t.Errorf("balance with an expiring lot: %q", out)
	}
	out, _, code = runCLI(t, "ledger", "acme", "--admin", s.admin)
	if code != 0 || !strings.Contains(out, "charge") || !strings.Contains(out, "-"+completionCost) || !strings.Contains(out, "gpt-4o on /v1/chat/completions: 100 in, 20 out") {
		t.Errorf("ledger: %q", out)
	}
	_, stderr, code = runCLI(t, "reconcile", "--since", "72h", "--admin", s.admin)
	if code != 1 || !strings.Contains(stderr, "set stripe.api_key") || !strings.Contains(stderr, "not_configured") {
		t.Errorf("reconcile without a Stripe key: exit %d %q", code, stderr)
	}
	res, data = chat(t, s.proxy, "nobody", chatRequest)
	if res.StatusCode != 402 || !strings.Contains(string(data), `"code":"insufficient_credits"`) {
		t.Errorf("unfunded customer: %d %s", res.StatusCode, data)
	}

	// A Stripe dispute on acme's top-up suspends acme.
	deliver := func(event string) {
		t.Helper()
		signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(event), Secret: webhookSecret, Timestamp: time.Now()})
		req, _ := http.NewRequest(http.MethodPost, s.admin+"/webhooks/stripe", strings.NewReader(event))
		req.Header.Set("Stripe-Signature", signed.Header)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("webhook: %d %s", res.StatusCode, data)
		}
	}
	deliver(`{"id":"evt_1","object":"event","livemode":false,"type":"checkout.session.completed","created":1700000000,"data":{"object":{"id":"cs_1","object":"checkout.session","mode":"payment","payment_status":"paid","payment_intent":"pi_1","customer":"cus_1","metadata":{"tollgate_customer":"acme","tollgate_credits":"5"}}}}`)
	deliver(`{"id":"evt_2","object":"event","livemode":false,"type":"charge.dispute.created","created":1700000100,"data":{"object":{"id":"dp_1","object":"dispute","charge":"ch_1","payment_intent":"pi_1","status":"needs_response"}}}`)
	res, data = chat(t, s.proxy, "acme", chatRequest)
	if res.StatusCode != 403 || !strings.Contains(string(data), `"code":"customer_suspended"`) {
		t.Errorf("disputed customer: %d %s", res.StatusCode, data)
	}

	res2, err := http.Get(s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res2.Body)
	res2.Body.Close()
	for _, m := range []string{`tollgate_requests_total{route="/v1/chat/completions",status="200"} 1`, "tollgate_credits_charged_total", "tollgate_stripe_events_total", "go_goroutines"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	if err := s.wait(t); err != nil {
		t.Fatalf("serve: %v", err)
	}
	logs := s.stderr.String()
	for _, secret := range []string{serveToken, "sk-provider", webhookSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain the secret %q", secret)
		}
	}
	if !strings.Contains(logs, `"msg":"tollgate stopped"`) {
		t.Errorf("no clean stop in the logs:\n%s", logs)
	}
	st := openLedger(t, filepath.Join(dir, "tollgate.db"))
	a, err := st.Account(context.Background(), "acme")
	if err != nil || a.Balance != want+mustParse(t, "7") || a.Reserved != 0 {
		t.Errorf("after stop: %+v %v", a, err)
	}
}

// TestServeStalledBody: on serve's own listener, a request whose body
// stops arriving is answered 408 request_timeout once
// request_body_timeout passes without a byte, and disconnected, while the
// customer's credits are untouched.
func TestServeStalledBody(t *testing.T) {
	dir := t.TempDir()
	up := newFakeProvider(t)
	s := startServe(t, writeConfig(t, dir, up.URL, boltSection(dir), "request_body_timeout: 300ms", "10"))
	adminCredit(t, s.admin, "acme", "10")

	conn, err := net.Dial("tcp", strings.TrimPrefix(s.proxy, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nX-Tollgate-Customer: acme\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(chatRequest), chatRequest[:10])
	start := time.Now()
	conn.SetReadDeadline(start.Add(10 * time.Second))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if elapsed := time.Since(start); res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(data), `"code":"request_timeout"`) ||
		elapsed < 300*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("after %s: %d %s; want 408 request_timeout after 300ms", elapsed, res.StatusCode, data)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 408: %v, want the connection closed", err)
	}
	if a := adminAccount(t, s.admin, "acme"); a.Balance != mustParse(t, "10") || a.Reserved != 0 {
		t.Errorf("account %+v: a stalled request must cost and hold nothing", a)
	}
}

// TestServeShutdown: SIGTERM lets open streams finish within
// shutdown_timeout and settles them; streams that outlive it are cut and
// settled too. No hold is left behind.
func TestServeShutdown(t *testing.T) {
	tests := []struct {
		name     string
		endless  bool
		extra    string
		complete bool // the client receives the whole stream
	}{
		{"streams finish", false, "shutdown_timeout: 10s", true},
		{"streams cut at shutdown_timeout", true, "shutdown_timeout: 300ms", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			up := newFakeProvider(t)
			up.pause, up.events, up.endless = 50*time.Millisecond, 10, tc.endless
			s := startServe(t, writeConfig(t, dir, up.URL, boltSection(dir), tc.extra, "10"))
			adminCredit(t, s.admin, "acme", "10")

			const streams = 3
			got := make(chan string, streams)
			started := make(chan struct{}, streams)
			for range streams {
				go func() {
					req, _ := http.NewRequest(http.MethodPost, s.proxy+"/v1/chat/completions", strings.NewReader(streamRequest))
					req.Header.Set("X-Tollgate-Customer", "acme")
					res, err := http.DefaultClient.Do(req)
					if err != nil {
						started <- struct{}{}
						got <- "error: " + err.Error()
						return
					}
					defer res.Body.Close()
					br := bufio.NewReader(res.Body)
					line, _ := br.ReadString('\n')
					started <- struct{}{}
					rest, _ := io.ReadAll(br)
					got <- line + string(rest)
				}()
			}
			for range streams {
				<-started
			}
			if a := adminAccount(t, s.admin, "acme"); a.Reserved == 0 {
				t.Fatal("nothing reserved while streams are open")
			}
			if err := s.wait(t); err != nil {
				t.Fatalf("serve: %v", err)
			}
			for range streams {
				body := <-got
				if complete := strings.HasSuffix(body, "data: [DONE]\n\n"); complete != tc.complete {
					t.Errorf("stream complete = %v, want %v: %q", complete, tc.complete, body)
				}
			}
			st := openLedger(t, filepath.Join(dir, "tollgate.db"))
			a, _ := st.Account(context.Background(), "acme")
			page, _ := st.Entries(context.Background(), "acme", "", 100)
			charges := 0
			for _, e := range page.Entries {
				if e.Kind == ledger.KindCharge {
					charges++
					if e.OutputTokens == 0 || (tc.complete && e.OutputTokens != 20) {
						t.Errorf("charge %+v", e)
					}
				}
			}
			if charges != streams || a.Reserved != 0 {
				t.Errorf("%d charges for %d streams, %s reserved after a clean stop", charges, streams, a.Reserved)
			}
		})
	}
}

// TestServeRedis runs serve on Redis, a single node and a cluster found by
// asking the node named in the URL.
func TestServeRedis(t *testing.T) {
	tests := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"single", func(t *testing.T) string { return redistest.Start(t).Addr }},
		{"cluster", func(t *testing.T) string { return redistest.StartCluster(t).Addrs[0] }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			up := newFakeProvider(t)
			customer := fmt.Sprintf("redis-%s-%d", tc.name, time.Now().UnixNano())
			store := fmt.Sprintf("redis_url: %q, hold_ttl: 1m", "redis://"+tc.addr(t)+"/0")
			s := startServe(t, writeConfig(t, dir, up.URL, store, "", "10"))
			adminCredit(t, s.admin, customer, "1")
			if res, data := chat(t, s.proxy, customer, chatRequest); res.StatusCode != 200 {
				t.Fatalf("%d %s", res.StatusCode, data)
			}
			waitAccount(t, s.admin, customer, time.Second, func(a ledger.Account) bool {
				return a.Reserved == 0 && a.Balance == mustParse(t, "1")-mustParse(t, completionCost)
			})
			if res, err := http.Get(s.admin + "/readyz"); err != nil || res.StatusCode != 200 {
				t.Errorf("/readyz: %v %v", res, err)
			}
			if tc.name == "cluster" && !strings.Contains(s.stderr.String(), "Redis Cluster detected") {
				t.Error("the cluster was not detected")
			}
		})
	}
	for _, userinfo := range []string{":hunter2", "default:hunter2", "hunter2"} {
		// "redis://hunter2@host" is a common slip for ":hunter2@": the
		// password lands in the user name, and must be hidden there too.
		t.Run("bad URL hides the password in "+userinfo, func(t *testing.T) {
			dir := t.TempDir()
			path := writeConfig(t, dir, "http://127.0.0.1:1", `redis_url: "redis://`+userinfo+`@localhost:6379/notadb"`, "", "10")
			_, stderr, code := runCLI(t, "serve", "--config", path)
			if code != 1 || !strings.Contains(stderr, "store.redis_url") || strings.Contains(stderr, "hunter2") {
				t.Errorf("exit %d: %s", code, stderr)
			}
		})
	}
}

// The tests below run tollgate as its own process, so that it can be
// killed and signalled: the test binary re-executes itself as
// `tollgate serve` (TestServeChild), which is the program main runs.

const childEnv = "TOLLGATE_TEST_SERVE_CHILD"

// TestServeChild is the child process: it runs `tollgate serve` with the
// arguments in $TOLLGATE_TEST_SERVE_CHILD and exits as main does.
func TestServeChild(t *testing.T) {
	args := os.Getenv(childEnv)
	if args == "" {
		t.Skip("runs only as the child process of TestServeKill9 and TestServeReload")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, strings.Split(args, "\x1f"), os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// child is a tollgate process.
type child struct {
	cmd          *exec.Cmd
	proxy, admin string
	stderr       *syncBuffer
	exited       chan error
	lines        chan string
}

// startChild starts `tollgate` with args and waits until it listens.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := spawnChild(t, args...)
	c.waitListening(t)
	return c
}

// spawnChild starts `tollgate` with args.
func spawnChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, "\x1f"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1), lines: make(chan string)}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.exited <- cmd.Wait()
	}()
	return c
}

// waitListening waits until the child has printed both addresses.
func (c *child) waitListening(t *testing.T) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for c.proxy == "" || c.admin == "" {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("tollgate exited before listening:\n%s", c.stderr.String())
			}
			if v := listenAddr(line, "proxy"); v != "" {
				c.proxy = v
			}
			if v := listenAddr(line, "admin"); v != "" {
				c.admin = v
			}
		case <-timeout:
			t.Fatalf("tollgate did not start:\n%s", c.stderr.String())
		}
	}
	go func() {
		for range c.lines {
		}
	}()
}

// logged waits until the child has logged msg.
func (c *child) logged(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.stderr.String(), `"msg":"`+msg) {
		if time.Now().After(deadline) {
			t.Fatalf("tollgate did not log %q:\n%s", msg, c.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeKill9: the hold of a request cut by SIGKILL mid-stream is not
// settled; on the embedded store holds live in the process's memory, so
// the customer's credits are available again at once, with the balance
// the file holds intact.
func TestServeKill9(t *testing.T) {
	const ttl = 3 * time.Second
	dir := t.TempDir()
	up := newFakeProvider(t)
	up.endless, up.pause = true, 50*time.Millisecond
	db := filepath.Join(dir, "tollgate.db")
	path := writeConfig(t, dir, up.URL, fmt.Sprintf("path: %q, hold_ttl: %s", db, ttl), "", "10")
	c := startChild(t, "serve", "--config", path)
	adminCredit(t, c.admin, "acme", "10")

	req, _ := http.NewRequest(http.MethodPost, c.proxy+"/v1/chat/completions", strings.NewReader(streamRequest))
	req.Header.Set("X-Tollgate-Customer", "acme")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	reserved := res.Header.Get("X-Tollgate-Reserved")
	if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	c.exited <- nil // for the cleanup

	st := openLedger(t, db)
	a, err := st.Account(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if reserved == "" || reserved == "0.000000" {
		t.Fatalf("the request held %q; want a hold to lose", reserved)
	}
	if a.Reserved != 0 || a.Balance != mustParse(t, "10") || a.Available != a.Balance {
		t.Errorf("right after the kill: %+v; want the hold of %s released and the balance intact", a, reserved)
	}
}

// TestServeKill9Leases: a replica killed with SIGKILL while it leases a
// busy customer's credits on Redis leaves its lease to expire as a hold
// does: right after the kill the lease is still reserved, after its ttl
// nothing is, and the balance is the ledger's sum.
func TestServeKill9Leases(t *testing.T) {
	const leaseTTL = 2 * time.Second
	dir := t.TempDir()
	up := newFakeProvider(t)
	addr := redistest.Start(t).Addr
	store := fmt.Sprintf("redis_url: %q, hold_ttl: 1m, leases: {flush_interval: 20ms, ttl: %s}", "redis://"+addr+"/0", leaseTTL)
	path := writeConfig(t, dir, up.URL, store, "", "10")
	c := startChild(t, "serve", "--config", path)
	cust := "acme-" + fmt.Sprint(time.Now().UnixNano())
	adminCredit(t, c.admin, cust, "10")
	// Busy enough to lease: more than 8 requests within a second.
	for range 12 {
		if res, data := chat(t, c.proxy, cust, chatRequest); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, data)
		}
	}
	res, err := http.Get(c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), `tollgate_lease_holds_total{from="lease"}`) || strings.Contains(string(metrics), `tollgate_lease_holds_total{from="lease"} 0`) {
		t.Fatalf("no request hold came from a lease:\n%s", metrics)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	c.exited <- nil // for the cleanup
	killed := time.Now()

	st := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: addr}), ledger.Options{})
	t.Cleanup(func() { st.Close() })
	a, err := st.Account(context.Background(), cust)
	if err != nil {
		t.Fatal(err)
	}
	if a.Reserved == 0 {
		t.Fatalf("right after the kill: %+v; want the replica's lease still reserved", a)
	}
	for a.Reserved != 0 {
		if time.Since(killed) > leaseTTL+3*time.Second {
			t.Fatalf("%v after the kill: %+v; the lease ttl is %v", time.Since(killed), a, leaseTTL)
		}
		time.Sleep(100 * time.Millisecond)
		if a, err = st.Account(context.Background(), cust); err != nil {
			t.Fatal(err)
		}
	}
	page, err := st.Entries(context.Background(), cust, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Micros
	for _, e := range page.Entries {
		sum += e.Amount
	}
	if a.Balance != sum || a.Available != a.Balance || a.Balance > mustParse(t, "10") {
		t.Errorf("after the lease expired: %+v, ledger sum %s; want balance = sum, all of it available", a, sum)
	}
}

// TestServeReload: SIGHUP applies a new price without dropping traffic; a
// file with errors is rejected and the running configuration kept; SIGTERM
// then stops the process cleanly.
func TestServeReload(t *testing.T) {
	dir := t.TempDir()
	up := newFakeProvider(t)
	db := boltSection(dir)
	path := writeConfig(t, dir, up.URL, db, "", "10")
	c := startChild(t, "serve", "--config", path)
	adminCredit(t, c.admin, "acme", "100")

	charge := func() money.Micros {
		t.Helper()
		before := adminAccount(t, c.admin, "acme").Balance
		if res, data := chat(t, c.proxy, "acme", chatRequest); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, data)
		}
		a := waitAccount(t, c.admin, "acme", time.Second, func(a ledger.Account) bool { return a.Reserved == 0 && a.Balance != before })
		return before - a.Balance
	}
	if got := charge(); got != mustParse(t, "0.000450") {
		t.Fatalf("charged %s before the reload", got)
	}

	// Traffic keeps flowing through the reload.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if res, data := chat(t, c.proxy, "traffic", chatRequest); res.StatusCode != 402 {
				t.Errorf("during the reload: %d %s", res.StatusCode, data) // "traffic" has no credits: 402 is the answer
			}
		}
	})
	writeConfig(t, dir, up.URL, db, "", "20")
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.logged(t, "config reloaded")
	close(stop)
	wg.Wait()
	// 100 input at 2.50 and 20 output at 20 per 1M.
	if got := charge(); got != mustParse(t, "0.000650") {
		t.Errorf("charged %s after the reload, want 0.000650", got)
	}

	if err := os.WriteFile(path, []byte("routes: [\nnot yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.logged(t, "config reload rejected; keeping the running configuration")
	if got := charge(); got != mustParse(t, "0.000650") {
		t.Errorf("charged %s after a rejected reload, want 0.000650", got)
	}

	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		c.exited <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, c.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	c.logged(t, "tollgate stopped")
}

// TestServeReconcileErrors: POST /v1/reconcile answers with the class of
// what failed. A run that listed every event but could not apply some of
// them is 500 reconcile_incomplete (running it again retries them), even
// when what failed for an event was a Stripe API call; only a failed
// listing is 502 stripe_api_error.
func TestServeReconcileErrors(t *testing.T) {
	tests := []struct {
		name   string
		events int // status of GET /v1/events
		status int
		code   string
	}{
		{"an event's line items cannot be read", http.StatusOK, http.StatusInternalServerError, "reconcile_incomplete"},
		{"the events cannot be listed", http.StatusUnauthorized, http.StatusBadGateway, "stripe_api_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stripe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				switch {
				case r.URL.Path == "/v1/events" && tc.events == http.StatusOK:
					io.WriteString(w, `{"object":"list","has_more":false,"data":[{"id":"evt_1","object":"event","livemode":false,"type":"checkout.session.completed","created":1700000000,"data":{"object":{"id":"cs_1","object":"checkout.session","mode":"payment","payment_status":"paid","payment_intent":"pi_1","customer":"cus_1","metadata":{"tollgate_customer":"acme"}}}}]}`)
				case r.URL.Path == "/v1/events":
					w.WriteHeader(tc.events)
					io.WriteString(w, `{"error":{"type":"invalid_request_error","message":"Invalid API Key provided"}}`)
				default:
					w.WriteHeader(http.StatusNotFound)
					io.WriteString(w, `{"error":{"type":"invalid_request_error","message":"No such checkout session"}}`)
				}
			}))
			t.Cleanup(stripe.Close)
			dir := t.TempDir()
			path := filepath.Join(dir, "tollgate.yaml")
			cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0", token: %s}
store: {%s}
stripe: {api_key: sk_test_reconcile, api_base: %q, reconcile_interval: 0s, livemode: false}
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: http://127.0.0.1:1
    prices:
      gpt-4o: {input: "2.50", output: "10"}
`, serveToken, boltSection(dir), stripe.URL)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			s := startServe(t, path)
			req, _ := http.NewRequest(http.MethodPost, s.admin+"/v1/reconcile", strings.NewReader(`{"since":"72h"}`))
			req.Header.Set("Authorization", "Bearer "+serveToken)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal(data, &e); err != nil || res.StatusCode != tc.status || e.Error.Code != tc.code {
				t.Errorf("%d %s, want %d %s", res.StatusCode, data, tc.status, tc.code)
			}
		})
	}
}

// TestServeSIGHUPDuringStart: a SIGHUP that arrives while serve is still
// starting (here: waiting for a Redis that does not answer) does not kill
// the process, as the signal's default action would; the file is read
// again once serving.
func TestServeSIGHUPDuringStart(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probing := make(chan struct{})
	var (
		mu   sync.Mutex
		held []net.Conn
	)
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if held = append(held, conn); len(held) == 1 {
				close(probing)
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range held {
			conn.Close()
		}
	})
	dir := t.TempDir()
	store := fmt.Sprintf("redis_url: %q, hold_ttl: 1m", "redis://"+silent.Addr().String()+"/0?read_timeout=300ms")
	c := spawnChild(t, "serve", "--config", writeConfig(t, dir, "http://127.0.0.1:1", store, "", "10"))
	select {
	case <-probing: // the child is asking the silent Redis whether it is a cluster
	case <-time.After(30 * time.Second):
		t.Fatalf("tollgate did not connect to Redis:\n%s", c.stderr.String())
	}
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.waitListening(t)
	c.logged(t, "config reloaded")
}
