package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/events"
)

// TestEventsEndToEnd: with events: in the config, a credit made through
// the CLI reaches the application's endpoint signed with the secret, and
// `tollgate events` lists it; --follow prints the next one as it comes.
func TestEventsEndToEnd(t *testing.T) {
	const secret = "whsec_e2e_0123456789"
	var mu sync.Mutex
	var received []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := events.Verify(secret, r.Header.Get(events.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("delivery: %v", err)
			w.WriteHeader(400)
			return
		}
		var ev struct{ ID, Type, Customer string }
		json.Unmarshal(body, &ev)
		mu.Lock()
		received = append(received, ev.ID+" "+ev.Type+" "+ev.Customer)
		mu.Unlock()
	}))
	defer app.Close()
	dir := t.TempDir()
	extra := fmt.Sprintf("events: {url: %q, secret: %q, low_balance: [\"5\"]}", app.URL, secret)
	s := startServe(t, writeConfig(t, dir, "http://127.0.0.1:1", boltSection(dir), extra, "10"))
	t.Setenv("TOLLGATE_ADMIN_TOKEN", serveToken)

	if _, stderr, code := runCLI(t, "credit", "acme", "10", "--key", "k1", "--admin", s.admin); code != 0 {
		t.Fatal(stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := strings.Join(received, "\n")
		mu.Unlock()
		if got == "evt_1 credits.granted acme" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, stderr, code := runCLI(t, "events", "--admin", s.admin)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") ||
		!strings.HasPrefix(lines[1], "evt_1 ") || !strings.Contains(lines[1], ` credits.granted      acme                 {"balance":"10.000000"`) {
		t.Fatalf("events: %d %q %q", code, out, stderr)
	}
	out, _, _ = runCLI(t, "events", "--after", "evt_1", "--admin", s.admin)
	if out != "no events\n" {
		t.Fatalf("events --after evt_1: %q", out)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	follow := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"events", "--follow", "--json", "--after", "evt_1", "--interval", "100ms", "--admin", s.admin}, follow, io.Discard)
	}()
	if _, stderr, code := runCLI(t, "credit", "acme", "-8", "--key", "k2", "--admin", s.admin); code != 0 {
		t.Fatal(stderr)
	}
	for !strings.Contains(follow.String(), `"type":"balance.low"`) {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("follow printed %q", follow.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
	if !strings.HasPrefix(follow.String(), `{"id":"evt_2","object":"event","type":"balance.low"`) {
		t.Fatalf("follow printed %q", follow.String())
	}
}
