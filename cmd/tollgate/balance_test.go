package main

import (
	"strings"
	"testing"
)

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
