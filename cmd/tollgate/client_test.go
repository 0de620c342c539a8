package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	tokens "github.com/tollgate-dev/tollgate/usage" // package main has a func usage
)

const testToken = "test-admin-token"

// fakeAdmin answers like tollgate's admin API (DESIGN "Admin listener"),
// checking what the CLI sends: method, path, bearer token, JSON body.
type fakeAdmin struct {
	t        *testing.T
	mu       sync.Mutex
	balances map[string]money.Micros
	entries  map[string][]ledger.Entry // oldest first
	keys     map[string]ledger.Entry   // customer + "\x00" + idempotency key
	requests []string                  // "METHOD /escaped/path?query"
	bodies   []string
}

func newFakeAdmin(t *testing.T) (*fakeAdmin, *httptest.Server) {
	f := &fakeAdmin{t: t, balances: map[string]money.Micros{}, entries: map[string][]ledger.Entry{}, keys: map[string]ledger.Entry{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testToken)
	t.Setenv("TOLLGATE_ADMIN_URL", srv.URL)
	return f, srv
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg, "type": "invalid_request_error", "code": code}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	target := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	f.requests = append(f.requests, r.Method+" "+target)
	f.bodies = append(f.bodies, string(body))

	if r.Header.Get("Authorization") != "Bearer "+testToken {
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong admin token")
		return
	}
	if r.Method == http.MethodPost && r.Header.Get("Content-Type") != "application/json" {
		f.t.Errorf("POST without Content-Type: application/json")
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/reconcile":
		var req struct{ Since string }
		if err := json.Unmarshal(body, &req); err != nil || req.Since == "" {
			writeError(w, http.StatusBadRequest, "invalid_request", "since is required")
			return
		}
		writeJSON(w, map[string]int{"events": 12, "applied": 3})
	case strings.HasPrefix(r.URL.Path, "/v1/customers/"):
		// The id is one escaped path segment, as a mux's {id} would see it.
		rest := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/customers/")
		rawID, sub, _ := strings.Cut(rest, "/")
		id, err := url.PathUnescape(rawID)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", "bad customer id")
			return
		}
		switch {
		case r.Method == http.MethodGet && sub == "":
			b := f.balances[id]
			writeJSON(w, map[string]any{"customer": id, "balance": b, "reserved": money.Micros(500_000), "available": b - 500_000})
		case r.Method == http.MethodPost && sub == "credits":
			f.credit(w, id, body)
		case r.Method == http.MethodGet && sub == "ledger":
			f.ledger(w, r, id)
		default:
			writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
		}
	default:
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}
}

func (f *fakeAdmin) credit(w http.ResponseWriter, id string, body []byte) {
	var req struct {
		Amount         *money.Micros `json:"amount"`
		Reason         string        `json:"reason"`
		IdempotencyKey string        `json:"idempotency_key"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Amount == nil || req.IdempotencyKey == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("bad credit body %s", body))
		return
	}
	if *req.Amount < -1000*money.Credit {
		writeError(w, http.StatusBadRequest, "invalid_request", "amount exceeds the adjustment limit")
		return
	}
	k := id + "\x00" + req.IdempotencyKey
	if e, ok := f.keys[k]; ok {
		writeJSON(w, map[string]any{"applied": false, "entry": e})
		return
	}
	f.balances[id] += *req.Amount
	kind := ledger.KindGrant
	if *req.Amount < 0 {
		kind = ledger.KindAdjust
	}
	e := f.add(id, ledger.Entry{Kind: kind, Amount: *req.Amount, Reference: req.IdempotencyKey, Reason: req.Reason})
	f.keys[k] = e
	writeJSON(w, map[string]any{"applied": true, "entry": e})
}

func (f *fakeAdmin) add(id string, e ledger.Entry) ledger.Entry {
	e.ID = strconv.Itoa(len(f.entries[id]) + 1)
	e.Customer = id
	e.BalanceAfter = f.balances[id]
	e.At = time.Date(2025, 6, 1, 12, 0, len(f.entries[id]), 0, time.UTC)
	f.entries[id] = append(f.entries[id], e)
	return e
}

// ledger pages newest first; the cursor is the id of the last entry sent.
func (f *fakeAdmin) ledger(w http.ResponseWriter, r *http.Request, id string) {
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit < 1 {
		writeError(w, http.StatusBadRequest, "invalid_request", "limit must be a positive number")
		return
	}
	all := f.entries[id]
	end := len(all) // exclusive, in oldest-first order
	if c := r.URL.Query().Get("before"); c != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(c, "cur_"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", "bad cursor")
			return
		}
		end = n - 1
	}
	page := []ledger.Entry{}
	for i := end - 1; i >= 0 && len(page) < limit; i-- {
		page = append(page, all[i])
	}
	var next *string
	if len(page) > 0 && page[len(page)-1].ID != "1" {
		c := "cur_" + page[len(page)-1].ID
		next = &c
	}
	writeJSON(w, map[string]any{"entries": page, "next": next})
}

func TestBalance(t *testing.T) {
	f, srv := newFakeAdmin(t)
	f.balances["team/a"] = 12_500_000

	stdout, stderr, code := runCLI(t, "balance", "team/a")
	want := "customer   team/a\nbalance    12.500000\nreserved   0.500000\navailable  12.000000\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Errorf("balance = %q, %q, %d; want %q", stdout, stderr, code, want)
	}
	if got := f.requests[0]; got != "GET /v1/customers/team%2Fa" {
		t.Errorf("request = %q", got)
	}

	stdout, _, code = runCLI(t, "balance", "--json", "never_seen", "--admin", srv.URL+"/")
	if code != 0 || stdout != `{"available":"-0.500000","balance":"0.000000","customer":"never_seen","reserved":"0.500000"}`+"\n" {
		t.Errorf("balance --json = %q (%d)", stdout, code)
	}

	_, stderr, code = runCLI(t, "balance")
	if code != 2 || !strings.Contains(stderr, "tollgate: balance needs ID: tollgate balance ID\n") {
		t.Errorf("balance without id: %d %q", code, stderr)
	}
}

func TestCredit(t *testing.T) {
	f, _ := newFakeAdmin(t)
	tests := []struct {
		name     string
		args     []string
		wantOut  string
		wantErr  string
		wantCode int
		wantBody string
	}{
		{
			name:     "flags after the arguments",
			args:     []string{"credit", "cust_1", "10.5", "--key", "k1", "--reason", "welcome"},
			wantOut:  "credited 10.500000 to cust_1; balance after: 10.500000 (entry 1)\n",
			wantBody: `{"amount":"10.500000","idempotency_key":"k1","reason":"welcome"}`,
		},
		{
			name:     "the same key again changes nothing",
			args:     []string{"credit", "--key=k1", "cust_1", "10.5"},
			wantOut:  "nothing changed: key \"k1\" was already applied for cust_1; balance after: 10.500000 (entry 1)\n",
			wantBody: `{"amount":"10.500000","idempotency_key":"k1"}`,
		},
		{
			name:     "a negative amount debits",
			args:     []string{"credit", "cust_1", "-5", "--key", "k2"},
			wantOut:  "debited 5.000000 from cust_1; balance after: 5.500000 (entry 2)\n",
			wantBody: `{"amount":"-5.000000","idempotency_key":"k2"}`,
		},
		{
			name:     "after --",
			args:     []string{"credit", "--key", "k3", "--", "cust_1", "-0.5"},
			wantOut:  "debited 0.500000 from cust_1; balance after: 5.000000 (entry 3)\n",
			wantBody: `{"amount":"-0.500000","idempotency_key":"k3"}`,
		},
		{
			name:     "an API error is its message",
			args:     []string{"credit", "cust_1", "-5000", "--key", "k4"},
			wantErr:  "tollgate: amount exceeds the adjustment limit (HTTP 400, invalid_request)\n",
			wantCode: 1,
			wantBody: `{"amount":"-5000.000000","idempotency_key":"k4"}`,
		},
		{
			name:     "no key",
			args:     []string{"credit", "cust_1", "10"},
			wantErr:  "tollgate: credit needs --key KEY, an idempotency key, so that running it again never credits twice; e.g. --key grant-" + time.Now().UTC().Format("2006-01-02") + "-cust_1\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "not an amount",
			args:     []string{"credit", "cust_1", "1e3", "--key", "k"},
			wantErr:  "tollgate: credit: AMOUNT \"1e3\" uses an exponent; write the amount in full, e.g. \"1000\" for 1e3\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "zero",
			args:     []string{"credit", "cust_1", "0", "--key", "k"},
			wantErr:  "tollgate: credit: AMOUNT is zero; give a positive amount to add credits, or a negative one such as -5 to remove them\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "missing amount",
			args:     []string{"credit", "cust_1", "--key", "k"},
			wantErr:  "tollgate: credit needs AMOUNT: tollgate credit ID AMOUNT --key KEY [--reason TEXT]\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.bodies)
			stdout, stderr, code := runCLI(t, tc.args...)
			if code != tc.wantCode || stdout != tc.wantOut || stderr != tc.wantErr {
				t.Errorf("got stdout %q stderr %q code %d\nwant stdout %q stderr %q code %d", stdout, stderr, code, tc.wantOut, tc.wantErr, tc.wantCode)
			}
			var sent string
			if len(f.bodies) > before {
				sent = strings.TrimSpace(f.bodies[before])
				if got := f.requests[before]; got != "POST /v1/customers/cust_1/credits" {
					t.Errorf("request = %q", got)
				}
			}
			if sent != tc.wantBody {
				t.Errorf("body sent = %q, want %q", sent, tc.wantBody)
			}
		})
	}
}

func TestLedgerPages(t *testing.T) {
	f, _ := newFakeAdmin(t)
	for i := 1; i <= 5; i++ {
		f.balances["c"] += money.Micros(i) * money.Credit
		f.add("c", ledger.Entry{Kind: "topup", Amount: money.Micros(i) * money.Credit, Reference: "cs_" + strconv.Itoa(i)})
	}
	f.balances["c"] -= 1234
	f.add("c", ledger.Entry{Kind: "charge", Amount: -1234, Reference: "req_1", Route: "/v1/chat/completions", Model: "gpt-4o-mini",
		Tokens: tokens.Tokens{InputTokens: 1200, CachedInputTokens: 1000, OutputTokens: 300}})

	stdout, stderr, code := runCLI(t, "ledger", "c", "--limit", "2")
	wantOut := "" +
		"AT                    KIND    AMOUNT     BALANCE    DETAIL\n" +
		"2025-06-01T12:00:05Z  charge  -0.001234  14.998766  gpt-4o-mini on /v1/chat/completions: 1200 in (1000 cached), 300 out · req_1\n" +
		"2025-06-01T12:00:04Z  topup   5.000000   15.000000  cs_5\n"
	if code != 0 || stdout != wantOut || stderr != "more entries: tollgate ledger c --before cur_5 (or --all)\n" {
		t.Errorf("first page:\n%s%s(%d)\nwant:\n%s", stdout, stderr, code, wantOut)
	}

	stdout, stderr, _ = runCLI(t, "ledger", "c", "--limit", "2", "--before", "cur_3")
	wantOut = "" +
		"AT                    KIND   AMOUNT    BALANCE   DETAIL\n" +
		"2025-06-01T12:00:01Z  topup  2.000000  3.000000  cs_2\n" +
		"2025-06-01T12:00:00Z  topup  1.000000  1.000000  cs_1\n"
	if stdout != wantOut || stderr != "" {
		t.Errorf("last page:\n%s%s\nwant:\n%s", stdout, stderr, wantOut)
	}

	f.requests = nil
	stdout, _, code = runCLI(t, "ledger", "--all", "c", "--limit", "4")
	if code != 0 || strings.Count(stdout, "\n") != 7 || !strings.Contains(stdout, "cs_1\n") || !strings.Contains(stdout, "req_1\n") {
		t.Errorf("--all:\n%s", stdout)
	}
	if want := []string{"GET /v1/customers/c/ledger?limit=4", "GET /v1/customers/c/ledger?before=cur_3&limit=4"}; fmt.Sprint(f.requests) != fmt.Sprint(want) {
		t.Errorf("--all requests = %q, want %q", f.requests, want)
	}

	stdout, _, _ = runCLI(t, "ledger", "c", "--all", "--json", "--limit", "5")
	var all struct {
		Entries []ledger.Entry `json:"entries"`
		Next    *string        `json:"next"`
	}
	if err := json.Unmarshal([]byte(stdout), &all); err != nil || len(all.Entries) != 6 || all.Next != nil || all.Entries[5].ID != "1" {
		t.Errorf("--all --json = %s (%v)", stdout, err)
	}

	stdout, _, _ = runCLI(t, "ledger", "nobody")
	if stdout != "no ledger entries for nobody\n" {
		t.Errorf("empty ledger = %q", stdout)
	}
	if _, stderr, code := runCLI(t, "ledger", "c", "--limit", "0"); code != 2 || !strings.Contains(stderr, "ledger: --limit 0: want 1 or more") {
		t.Errorf("--limit 0: %d %q", code, stderr)
	}
}

func TestReconcile(t *testing.T) {
	f, _ := newFakeAdmin(t)
	stdout, stderr, code := runCLI(t, "reconcile", "--since", "72h")
	if code != 0 || stderr != "" || stdout != "reconciled the last 72h: 12 Stripe events, 3 applied now (the rest were already applied or change nothing)\n" {
		t.Errorf("reconcile = %q %q %d", stdout, stderr, code)
	}
	if f.requests[0] != "POST /v1/reconcile" || strings.TrimSpace(f.bodies[0]) != `{"since":"72h"}` {
		t.Errorf("request = %q %q", f.requests[0], f.bodies[0])
	}
	stdout, _, _ = runCLI(t, "reconcile", "--since=1h", "--json")
	if stdout != `{"applied":3,"events":12}`+"\n" {
		t.Errorf("--json = %q", stdout)
	}
	for _, tc := range []struct{ args, want string }{
		{"reconcile", "reconcile needs --since DURATION, e.g. --since 72h"},
		{"reconcile --since soon", `reconcile: --since "soon" is not a duration; want e.g. 72h or 30m`},
		{"reconcile --since 721h", `reconcile: --since "721h" is longer than 720h: Stripe keeps events for 30 days`},
		{"reconcile --since -1h", `reconcile: --since "-1h" must be greater than 0, e.g. 72h`},
	} {
		_, stderr, code := runCLI(t, strings.Fields(tc.args)...)
		if code != 2 || !strings.Contains(stderr, "tollgate: "+tc.want+"\n") {
			t.Errorf("%s: %d %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	if len(f.requests) != 2 {
		t.Errorf("invalid invocations reached the server: %q", f.requests)
	}
}

func TestClientErrors(t *testing.T) {
	_, srv := newFakeAdmin(t)

	t.Run("no token", func(t *testing.T) {
		t.Setenv("TOLLGATE_ADMIN_TOKEN", "")
		_, stderr, code := runCLI(t, "balance", "c")
		want := "tollgate: missing or wrong admin token (HTTP 401, unauthorized); set $TOLLGATE_ADMIN_TOKEN to the server's admin.token\n"
		if code != 1 || stderr != want {
			t.Errorf("stderr %q (%d), want %q", stderr, code, want)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream connect error", http.StatusBadGateway)
		}))
		defer bad.Close()
		_, stderr, code := runCLI(t, "balance", "c", "--admin", bad.URL)
		want := "tollgate: the admin API at " + bad.URL + " answered 502 Bad Gateway: upstream connect error\n"
		if code != 1 || stderr != want {
			t.Errorf("stderr %q (%d), want %q", stderr, code, want)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		t.Setenv("TOLLGATE_ADMIN_URL", addr)
		_, stderr, code := runCLI(t, "balance", "c")
		want := "tollgate: cannot reach the admin API at http://" + addr + ": connection refused; is `tollgate serve` running there? Point --admin or $TOLLGATE_ADMIN_URL at its admin.listen address ($TOLLGATE_ADMIN_URL gave this URL)\n"
		if code != 1 || stderr != want {
			t.Errorf("stderr %q (%d), want %q", stderr, code, want)
		}
	})
	t.Run("bad admin URL", func(t *testing.T) {
		_, stderr, code := runCLI(t, "balance", "c", "--admin", "ftp://x")
		if code != 2 || !strings.Contains(stderr, `tollgate: admin URL "ftp://x" (from --admin) is not an http or https base URL; want e.g. http://127.0.0.1:9090`) {
			t.Errorf("stderr %q (%d)", stderr, code)
		}
	})
	t.Run("path prefix", func(t *testing.T) {
		_, stderr, code := runCLI(t, "balance", "c", "--admin", srv.URL+"/tollgate")
		if code != 1 || stderr != "tollgate: no such endpoint (HTTP 404, not_found)\n" {
			t.Errorf("stderr %q (%d)", stderr, code)
		}
	})
}
