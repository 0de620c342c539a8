package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	tokens "github.com/tollgate-dev/tollgate/usage" // package main has a func usage
)

func TestLedgerPages(t *testing.T) {
	f, _ := newFakeAdmin(t)
	for i := 1; i <= 5; i++ {
		f.balances["c"] += money.Micros(i) * money.Credit
		f.add("c", ledger.Entry{Kind: "topup", Amount: money.Micros(i) * money.Credit, Reference: "cs_" + strconv.Itoa(i)})
	}
	f.balances["c"] -= 1234
	f.add("c", ledger.Entry{Kind: "charge", Amount: -1234, Reference: "req_1", Route: "/v1/chat/completions", Model: "gpt-4o-mini",
		Tokens: tokens.Tokens{InputTokens: 1200, CachedInputTokens: 1000, CacheWriteInputTokens: 100, CacheWrite1hInputTokens: 100, OutputTokens: 300, WebSearchCalls: 2}})

	stdout, stderr, code := runCLI(t, "ledger", "c", "--limit", "2")
	wantOut := "" +
		"AT                    KIND    AMOUNT     BALANCE    DETAIL\n" +
		"2025-06-01T12:00:05Z  charge  -0.001234  14.998766  gpt-4o-mini on /v1/chat/completions: 1200 in (1000 cached, 100 cache write, 100 of them 1h), 300 out, calls: 2 web_search · req_1\n" +
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
