package testdeps_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testdeps"
)

// lookPathHaving finds exactly the named programs.
func lookPathHaving(names ...string) func(string) (string, error) {
	return func(name string) (string, error) {
		if slices.Contains(names, name) {
			return "/usr/bin/" + name, nil
		}
		return "", errors.New("not found")
	}
}

const (
	redisInstall  = "Redis 7 or later (apt-get install redis-server on Debian and Ubuntu, brew install redis on macOS)"
	stripeInstall = "go install github.com/stripe/stripe-mock@v0.203.0 (and put $(go env GOPATH)/bin on PATH)"
)

// TestSummary: one line naming the tests each missing program skipped and
// each install command once; nothing when nothing is missing.
func TestSummary(t *testing.T) {
	tests := []struct {
		name string
		have []string
		want string
	}{
		{"everything installed", []string{"redis-server", "redis-cli", "stripe-mock"}, ""},
		{
			"a fresh machine", nil,
			"make test: skipped the Redis tests of ledger, proxy, stripesync and cmd/tollgate (no redis-server on PATH), the Redis Cluster tests (no redis-cli on PATH), the Stripe API client tests of stripesync (no stripe-mock on PATH). Install: " +
				redisInstall + "; " + stripeInstall + ". With CI=true they fail instead of skipping.",
		},
		{
			"no stripe-mock", []string{"redis-server", "redis-cli"},
			"make test: skipped the Stripe API client tests of stripesync (no stripe-mock on PATH). Install: " + stripeInstall + ". With CI=true they fail instead of skipping.",
		},
		{
			"redis-server without redis-cli", []string{"redis-server", "stripe-mock"},
			"make test: skipped the Redis Cluster tests (no redis-cli on PATH). Install: " + redisInstall + ". With CI=true they fail instead of skipping.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := testdeps.Summary(testdeps.Missing(lookPathHaving(tc.have...))); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestCheck looks on the real PATH: a program there passes, one missing
// is named with how to install it.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "redis-server"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if err := testdeps.Check("redis-server"); err != nil {
		t.Errorf("Check(redis-server) = %v with it on PATH", err)
	}
	err := testdeps.Check("redis-server", "redis-cli", "stripe-mock")
	want := "redis-cli and stripe-mock not on PATH; install: " + redisInstall + "; " + stripeInstall
	if err == nil || err.Error() != want {
		t.Errorf("Check = %v\nwant %s", err, want)
	}
}

// TestInCI: CI set to anything but "", "0" or "false" (any case) is CI.
func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "FALSE": false, "true": true, "1": true, "yes": true} {
		t.Setenv("CI", v)
		if got := testdeps.InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", v, got, want)
		}
	}
}
