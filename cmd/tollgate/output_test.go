package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// failingWriter fails every write, as a full disk or a closed pipe does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestOutputErrors: a command whose output cannot be written exits with
// status 1 and says why, instead of reporting success.
func TestOutputErrors(t *testing.T) {
	unsetenv(t, append(exampleVars, "TOLLGATE_CONFIG")...)
	f, _ := newFakeAdmin(t)
	f.balances["acme"] = 1_000_000
	tests := []struct {
		name string
		args []string
	}{
		{"help", []string{"help"}},
		{"a command's help", []string{"check", "--help"}},
		{"check", []string{"check", "--config", filepath.Join("..", "..", "config.example.yaml")}},
		{"balance", []string{"balance", "acme"}},
		{"ledger", []string{"ledger", "acme"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(t.Context(), tc.args, failingWriter{}, &stderr)
			if code := exitCode(err, &stderr); code != 1 || !strings.HasSuffix(stderr.String(), "no space left on device\n") {
				t.Errorf("exit %d, stderr %q; want 1 and the write error", code, stderr.String())
			}
		})
	}
}
