package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

func TestLots(t *testing.T) {
	f, _ := newFakeAdmin(t)
	at := time.Date(2030, 1, 31, 12, 0, 0, 0, time.UTC)
	f.lots["team/a"] = []ledger.Lot{
		{ID: "4", Kind: ledger.KindGrant, Amount: 1_000_000, Remaining: 1_000_000, Priority: 0, Reference: "first"},
		{ID: "2", Kind: ledger.KindGrant, Amount: 5_000_000, Remaining: 2_500_000, Priority: 10, ExpiresAt: &at, Reference: "in_123"},
		{ID: "1", Kind: ledger.KindTopup, Amount: 10_000_000, Remaining: 10_000_000, Priority: 50},
	}
	stdout, stderr, code := runCLI(t, "lots", "team/a")
	want := "LOT  KIND   REMAINING  OF         PRIORITY  EXPIRES               REFERENCE\n" +
		"4    grant  1.000000   1.000000   0         never                 first\n" +
		"2    grant  2.500000   5.000000   10        2030-01-31T12:00:00Z  in_123\n" +
		"1    topup  10.000000  10.000000  50        never                 -\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Errorf("lots = %q, %q, %d\nwant %q", stdout, stderr, code, want)
	}
	if got := f.requests[0]; got != "GET /v1/customers/team%2Fa/lots" {
		t.Errorf("request = %q", got)
	}
	stdout, _, code = runCLI(t, "lots", "nobody")
	if code != 0 || stdout != "nobody has no active lots\n" {
		t.Errorf("lots of nobody = %q (%d)", stdout, code)
	}
	stdout, _, code = runCLI(t, "lots", "nobody", "--json")
	if code != 0 || stdout != `{"lots":[]}`+"\n" {
		t.Errorf("lots --json = %q (%d)", stdout, code)
	}
	_, stderr, code = runCLI(t, "lots")
	if code != 2 || !strings.Contains(stderr, "tollgate: lots needs ID: tollgate lots ID\n") {
		t.Errorf("lots without id: %d %q", code, stderr)
	}
}
