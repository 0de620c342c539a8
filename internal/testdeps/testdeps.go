// Package testdeps names the programs some of tollgate's tests run from
// PATH (redis-server, redis-cli, stripe-mock), which tests need each one
// and how to install it: one definition that the tests' skip messages and
// the summary `make test` prints after go test (package summary) share.
//
// Without a tool those tests skip, except under CI (InCI), where they fail:
// a CI run that skips proves nothing. Locally a skip in go test's output
// is easy to miss, hence the summary: it checks the same PATH the tests
// looked in, so it is right even when go test answers from its cache.
//
// It does not start or stop anything (package redistest does, for Redis).
package testdeps

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Tool is a program some tests run from PATH.
type Tool struct {
	// Name is the executable looked up on PATH.
	Name string
	// Tests says which tests need it, for people.
	Tests string
	// Install says how to install it.
	Install string
}

// The tools' names.
const (
	RedisServer = "redis-server"
	RedisCLI    = "redis-cli"
	StripeMock  = "stripe-mock"
)

// installRedis is how Redis (redis-server and redis-cli) is installed.
const installRedis = "Redis 7 or later (apt-get install redis-server on Debian and Ubuntu, brew install redis on macOS)"

// StripeMockVersion is the stripe-mock the tests are written against;
// .ci/run installs the same.
const StripeMockVersion = "v0.203.0"

// Tools returns every tool some test needs, in the order Summary names
// them.
func Tools() []Tool {
	return []Tool{
		{Name: RedisServer, Tests: "the Redis tests of ledger, proxy, stripesync and cmd/tollgate", Install: installRedis},
		{Name: RedisCLI, Tests: "the Redis Cluster tests", Install: installRedis},
		{Name: StripeMock, Tests: "the Stripe API client tests of stripesync", Install: "go install github.com/stripe/stripe-mock@" + StripeMockVersion + " (and put $(go env GOPATH)/bin on PATH)"},
	}
}

// Missing returns the tools lookPath (exec.LookPath) does not find, in
// the order of Tools.
func Missing(lookPath func(string) (string, error)) []Tool {
	var out []Tool
	for _, t := range Tools() {
		if _, err := lookPath(t.Name); err != nil {
			out = append(out, t)
		}
	}
	return out
}

// Check returns nil when every named tool is on PATH, else an error that
// names the missing ones and how to install them: the start of the
// message a test skips (or, under CI, fails) with.
func Check(names ...string) error {
	var missing []Tool
	for _, t := range Tools() {
		for _, n := range names {
			if t.Name == n {
				if _, err := exec.LookPath(n); err != nil {
					missing = append(missing, t)
				}
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	n := make([]string, len(missing))
	for i, t := range missing {
		n[i] = t.Name
	}
	return fmt.Errorf("%s not on PATH; install: %s", strings.Join(n, " and "), installs(missing))
}

// Summary is the one line that says which tests skipped for want of the
// missing tools and how to install them; "" when none is missing.
func Summary(missing []Tool) string {
	if len(missing) == 0 {
		return ""
	}
	skipped := make([]string, len(missing))
	for i, t := range missing {
		skipped[i] = t.Tests + " (no " + t.Name + " on PATH)"
	}
	return "make test: skipped " + strings.Join(skipped, ", ") + ". Install: " + installs(missing) +
		". With CI=true they fail instead of skipping."
}

// installs is how to install tools, each command once.
func installs(tools []Tool) string {
	var out []string
	for _, t := range tools {
		if !slices.Contains(out, t.Install) {
			out = append(out, t.Install)
		}
	}
	return strings.Join(out, "; ")
}

// InCI reports whether the CI environment variable is set to something
// other than "false" or "0": tests then fail instead of skipping when a
// tool is missing, and Summary is not printed.
func InCI() bool {
	v := strings.TrimSpace(os.Getenv("CI"))
	return v != "" && !strings.EqualFold(v, "false") && v != "0"
}
