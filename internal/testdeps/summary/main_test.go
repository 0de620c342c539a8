package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTools returns a directory holding executables named names.
func fakeTools(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRun looks the tools up on a PATH of the test's making: a machine
// without redis-server gets the line, one with every tool or under CI
// gets nothing.
func TestRun(t *testing.T) {
	tests := []struct {
		name string
		path string
		ci   bool
		want string // a prefix; "" means no output at all
	}{
		{"no redis-server", fakeTools(t, "redis-cli", "stripe-mock"), false,
			"make test: skipped the Redis tests of ledger, proxy, stripesync and cmd/tollgate (no redis-server on PATH). Install: Redis 7 or later"},
		{"nothing installed", fakeTools(t), false,
			"make test: skipped the Redis tests of ledger, proxy, stripesync and cmd/tollgate (no redis-server on PATH), the Redis Cluster tests (no redis-cli on PATH), the Stripe API client tests of stripesync (no stripe-mock on PATH). Install: "},
		{"nothing installed, under CI", fakeTools(t), true, ""},
		{"everything installed", fakeTools(t, "redis-server", "redis-cli", "stripe-mock"), false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			var out bytes.Buffer
			run(&out, tc.ci, exec.LookPath)
			got := out.String()
			if tc.want == "" {
				if got != "" {
					t.Errorf("printed %q, want nothing", got)
				}
				return
			}
			if !strings.HasPrefix(got, tc.want) || strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, ".\n") {
				t.Errorf("printed %q\nwant one line starting %q", got, tc.want)
			}
		})
	}
}

// TestMakeTest runs the Makefile's test target with a stand-in for go
// that records its commands: vet, then go test -race ./..., then this
// summary, whether go test passes or fails, and make test fails exactly
// when go test does.
func TestMakeTest(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not on PATH")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	// Read here too, so that go test's cache knows this test depends on
	// the Makefile, which only make opens.
	if mk, err := os.ReadFile(filepath.Join(root, "Makefile")); err != nil || !bytes.Contains(mk, []byte("\ntest:")) {
		t.Fatalf("no test target in %s/Makefile (%v)", root, err)
	}
	for _, testExit := range []string{"0", "1"} {
		t.Run("go test exits "+testExit, func(t *testing.T) {
			dir := t.TempDir()
			log := filepath.Join(dir, "log")
			fake := filepath.Join(dir, "go")
			script := "#!/bin/sh\necho \"$*\" >> " + log + "\ncase \"$1\" in\n  test) exit " + testExit + " ;;\n  run) echo SUMMARY ;;\nesac\n"
			if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("make", "-s", "-C", root, "test", "GO="+fake)
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != (testExit != "0") {
				t.Errorf("make test: err %v with go test exiting %s\n%s", err, testExit, out)
			}
			// The summary is the last line, but for make's own report of
			// the failure.
			var last string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.HasPrefix(l, "make:") && !strings.HasPrefix(l, "make[") {
					last = l
				}
			}
			if last != "SUMMARY" {
				t.Errorf("the summary is not the last line:\n%s", out)
			}
			ran, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			if want := "vet ./...\ntest -race ./...\nrun ./internal/testdeps/summary\n"; string(ran) != want {
				t.Errorf("go was run as\n%s\nwant\n%s", ran, want)
			}
		})
	}
}
