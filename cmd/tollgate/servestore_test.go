package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
)

// readyz returns /readyz's status and body.
func readyz(t *testing.T, admin string) (int, string) {
	t.Helper()
	res, err := http.Get(admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(data)
}

// waitReadyz polls /readyz until it answers status, for at most 10s.
func waitReadyz(t *testing.T, admin string, status int, says string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, body := readyz(t, admin)
		if got == status && strings.Contains(body, says) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %s; want %d saying %q", got, body, status, says)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func redisSection(addr string) string {
	return fmt.Sprintf("redis_url: %q, hold_ttl: 1m", "redis://"+addr+"/0")
}

// TestServeRefusesEvictingRedis: serve will not start on a Redis whose
// maxmemory-policy may evict keys, and says what to set.
func TestServeRefusesEvictingRedis(t *testing.T) {
	srv := redistest.StartOwnWith(t, "--maxmemory-policy", "allkeys-lru")
	path := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", redisSection(srv.Addr), "", "10")
	_, stderr, code := runCLI(t, "serve", "--config", path)
	want := "tollgate: store.redis_url redis://" + srv.Addr + "/0: Redis " + srv.Addr + " has maxmemory-policy allkeys-lru: " +
		"tollgate's idempotency keys and ledger must never be evicted; set maxmemory-policy noeviction " +
		"(CONFIG SET maxmemory-policy noeviction, and in redis.conf or your provider's parameter group)\n"
	if code != 1 || !strings.HasSuffix(stderr, want) {
		t.Fatalf("exit %d, stderr:\n%s\nwant it to end with:\n%s", code, stderr, want)
	}
}

// TestServeRedisWarnings: serve starts on a Redis without persistence, or
// one that refuses CONFIG GET, and warns once in its log.
func TestServeRedisWarnings(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no persistence", nil, `has no persistence (appendonly no, save \"\")`},
		{"CONFIG refused", []string{"--rename-command", "CONFIG", ""}, "refuses CONFIG GET"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartOwnWith(t, tc.args...)
			s := startServe(t, writeConfig(t, t.TempDir(), "http://127.0.0.1:1", redisSection(srv.Addr), "", "10"))
			waitReadyz(t, s.admin, 200, "ready")
			if n := strings.Count(s.stderr.String(), tc.want); n != 1 {
				t.Errorf("warning %q logged %d times, want once:\n%s", tc.want, n, s.stderr.String())
			}
		})
	}
}

// TestServeRedisDataLoss: Redis restarts empty under serve. Without any
// probe, serve notices within its check interval (an error in the log,
// /readyz 503, requests refused); `tollgate accept-data-loss` brings it
// back.
func TestServeRedisDataLoss(t *testing.T) {
	srv := redistest.StartOwn(t)
	up := newFakeProvider(t)
	s := startServe(t, writeConfig(t, t.TempDir(), up.URL, redisSection(srv.Addr), "", "10"))
	adminCredit(t, s.admin, "dora", "1")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(storeCheckInterval + 5*time.Second)
	for !strings.Contains(s.stderr.String(), `"level":"error"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged %s after Redis came back empty:\n%s", storeCheckInterval+5*time.Second, s.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(s.stderr.String(), "Redis lost tollgate's data") {
		t.Fatalf("the error does not say what happened:\n%s", s.stderr.String())
	}
	waitReadyz(t, s.admin, 503, "Redis lost tollgate's data")
	if res, data := chat(t, s.proxy, "dora", chatRequest); res.StatusCode != 503 {
		t.Fatalf("chat after the loss: %d %s", res.StatusCode, data)
	}

	t.Setenv("TOLLGATE_ADMIN_TOKEN", serveToken)
	stdout, stderr, code := runCLI(t, "accept-data-loss", "--admin", s.admin)
	if code != 0 || stdout != "accepted: tollgate serves what Redis holds now (ready); the other replicas follow within seconds\n" {
		t.Fatalf("accept-data-loss: exit %d\n%s%s", code, stdout, stderr)
	}
	waitReadyz(t, s.admin, 200, "ready")
	adminCredit(t, s.admin, "dora", "1")
	if res, data := chat(t, s.proxy, "dora", chatRequest); res.StatusCode != 200 {
		t.Fatalf("chat after accepting: %d %s", res.StatusCode, data)
	}
}
