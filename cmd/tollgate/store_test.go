package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/internal/redistest"
)

// TestRedisClientKeepsURLOptions: the options of store.redis_url reach
// the client whether the URL names a single node, a node that turns out
// to belong to a cluster, or a cluster's nodes with ?addr=, and tollgate's
// own defaults apply to each.
func TestRedisClientKeepsURLOptions(t *testing.T) {
	single := redistest.Start(t).Addr
	cluster := redistest.StartCluster(t).Addrs
	const query = "?client_name=tg&pool_size=7&dial_timeout=3s&max_concurrent_dials=3&conn_max_lifetime=1h&conn_max_lifetime_jitter=1m"
	tests := []struct {
		name, url   string
		wantCluster bool
	}{
		{"single node", "redis://" + single + "/0" + query, false},
		{"cluster found by asking", "redis://" + cluster[0] + "/0" + query, true},
		{"cluster named", "redis://" + cluster[0] + query + "&addr=" + cluster[1], true},
	}
	type options struct {
		ClientName                           string
		PoolSize, MaxConcurrentDials         int
		DialTimeout, ConnMaxLifetime, Jitter time.Duration
		MaxRetries, Protocol, DialerRetries  int
		ContextTimeoutEnabled                bool
	}
	want := options{
		ClientName: "tg", PoolSize: 7, MaxConcurrentDials: 3, DialTimeout: 3 * time.Second,
		ConnMaxLifetime: time.Hour, Jitter: time.Minute,
		MaxRetries: 1, Protocol: 2, DialerRetries: 1, ContextTimeoutEnabled: true,
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := redisClient(context.Background(), tc.url, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			var got options
			switch c := c.(type) {
			case *redis.Client:
				o := c.Options()
				got = options{o.ClientName, o.PoolSize, o.MaxConcurrentDials, o.DialTimeout, o.ConnMaxLifetime, o.ConnMaxLifetimeJitter,
					o.MaxRetries, o.Protocol, o.DialerRetries, o.ContextTimeoutEnabled}
			case *redis.ClusterClient:
				o := c.Options()
				got = options{o.ClientName, o.PoolSize, o.MaxConcurrentDials, o.DialTimeout, o.ConnMaxLifetime, o.ConnMaxLifetimeJitter,
					o.MaxRetries, o.Protocol, o.DialerRetries, o.ContextTimeoutEnabled}
			}
			if _, isCluster := c.(*redis.ClusterClient); isCluster != tc.wantCluster {
				t.Errorf("got a %T, want a cluster client: %t", c, tc.wantCluster)
			}
			if got != want {
				t.Errorf("options\n got %+v\nwant %+v", got, want)
			}
		})
	}
}
