package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestServeListenFromEnv: serve listens where $TOLLGATE_LISTEN says, over
// the file's listen, as the container image relies on. The file names an
// address this host cannot bind (TEST-NET-1), so serve would fail without
// the override.
func TestServeListenFromEnv(t *testing.T) {
	dir := t.TempDir()
	up := newFakeProvider(t)
	path := writeConfig(t, dir, up.URL, boltSection(dir), "", "10")
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const loopback = "listen: 127.0.0.1:0\n"
	if !bytes.HasPrefix(cfg, []byte(loopback)) {
		t.Fatalf("the test config does not start with %q:\n%s", loopback, cfg)
	}
	cfg = append([]byte("listen: 192.0.2.1:8080\n"), cfg[len(loopback):]...)
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOLLGATE_LISTEN", "127.0.0.1:0")
	s := startServe(t, path)
	if !strings.HasPrefix(s.proxy, "http://127.0.0.1:") {
		t.Fatalf("proxy listening on %s, want 127.0.0.1", s.proxy)
	}
	res, data := chat(t, s.proxy, "nobody", chatRequest)
	if res.StatusCode != 402 {
		t.Errorf("chat: %d %s", res.StatusCode, data)
	}
}
