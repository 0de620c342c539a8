package redistest_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-dev/tollgate/internal/redistest"
)

func TestStartStopRestart(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartOwn(t)
	rdb := srv.Client(t)
	if err := rdb.Set(ctx, "redistest:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded on a stopped server")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
	// Persistence is off: a restart starts empty.
	if err := rdb.Get(ctx, "redistest:k").Err(); err != redis.Nil {
		t.Fatalf("GET after restart = %v, want redis.Nil", err)
	}
}

// TestPauseResume: a paused server answers nothing until it is resumed,
// then answers what it was sent meanwhile.
func TestPauseResume(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartOwn(t)
	rdb := srv.Client(t)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	hung := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	defer hung.Close()
	if err := hung.Ping(short).Err(); err == nil {
		t.Fatal("PING answered by a paused server")
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after resume: %v", err)
	}
	// A paused server still stops.
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestStartOwnWith: extra arguments override the defaults; with AOF on,
// data survives a restart.
func TestStartOwnWith(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartOwnWith(t, "--appendonly", "yes", "--maxmemory-policy", "allkeys-lru")
	rdb := srv.Client(t)
	if got := rdb.ConfigGet(ctx, "maxmemory-policy").Val()["maxmemory-policy"]; got != "allkeys-lru" {
		t.Fatalf("maxmemory-policy %q", got)
	}
	if err := rdb.Set(ctx, "redistest:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.Get(ctx, "redistest:k").Result(); err != nil || got != "v" {
		t.Fatalf("GET after restart with AOF = %q, %v; want \"v\"", got, err)
	}
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t)
	if len(c.Addrs) != 3 {
		t.Fatalf("cluster has %d masters, want 3", len(c.Addrs))
	}
	cc := c.Client(t)
	var masters atomic.Int32
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		masters.Add(1)
		info, err := n.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			t.Errorf("node %s: %s", n.Options().Addr, info)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := masters.Load(); got != 3 {
		t.Fatalf("client sees %d masters, want 3", got)
	}
	// Keys in different slots land on different masters and still work.
	for _, k := range []string{"redistest:{a}", "redistest:{b}", "redistest:{c}"} {
		if err := cc.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		cc.Del(ctx, k)
	}
}

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"": false, "false": false, "FALSE": false, "0": false, "true": true, "1": true, "yes": true} {
		t.Setenv("CI", v)
		if got := redistest.InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", v, got, want)
		}
	}
}
