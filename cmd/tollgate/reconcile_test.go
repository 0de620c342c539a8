package main

import (
	"strings"
	"testing"
)

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
