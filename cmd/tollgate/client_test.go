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
	lots     map[string][]ledger.Lot   // in burn order, as GET .../lots answers
	requests []string                  // "METHOD /escaped/path?query"
	bodies   []string
}

func newFakeAdmin(t *testing.T) (*fakeAdmin, *httptest.Server) {
	f := &fakeAdmin{t: t, balances: map[string]money.Micros{}, entries: map[string][]ledger.Entry{}, keys: map[string]ledger.Entry{}, lots: map[string][]ledger.Lot{}}
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
		case r.Method == http.MethodGet && sub == "lots":
			lots := f.lots[id]
			if lots == nil {
				lots = []ledger.Lot{}
			}
			writeJSON(w, map[string]any{"lots": lots})
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
