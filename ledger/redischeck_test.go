package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// observed returns a store on a new client of addr whose log the test can
// read.
func observed(t *testing.T, addr string) (*ledger.RedisStore, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	s := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: 1, DialerRetries: 1}),
		ledger.Options{Logger: zap.New(core)})
	t.Cleanup(func() { s.Close() })
	return s, logs
}

func credit(s ledger.Store, customer, key string) error {
	_, err := s.Credit(context.Background(), ledger.Credit{Customer: customer, Amount: money.Credit, Kind: ledger.KindGrant, Key: key})
	return err
}

// TestRedisReadyEvictionPolicy: a Redis that may evict keys is refused,
// with a message that says what to set, and every call fails closed until
// the policy is fixed.
func TestRedisReadyEvictionPolicy(t *testing.T) {
	srv := redistest.StartOwnWith(t, "--maxmemory-policy", "allkeys-lru")
	s, _ := observed(t, srv.Addr)
	err := s.Ready(ctx)
	want := "Redis " + srv.Addr + " has maxmemory-policy allkeys-lru: tollgate's idempotency keys and ledger must never be evicted; " +
		"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf or your provider's parameter group)"
	var pe *ledger.EvictionPolicyError
	if !errors.As(err, &pe) || !errors.Is(err, ledger.ErrUnsafeStore) || err.Error() != want {
		t.Fatalf("Ready = %v\nwant %s", err, want)
	}
	if err := credit(s, "evict", "k"); !errors.Is(err, ledger.ErrStoreUnavailable) || !errors.Is(err, ledger.ErrUnsafeStore) {
		t.Fatalf("Credit on an evicting Redis: %v; want ErrStoreUnavailable and ErrUnsafeStore", err)
	}
	if err := srv.Client(t).ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after CONFIG SET maxmemory-policy noeviction: %v", err)
	}
	if err := credit(s, "evict", "k"); err != nil {
		t.Fatal(err)
	}
}

// TestRedisReadyWarnings: a Redis without persistence, or one that refuses
// CONFIG GET, is usable, with one warning per node that says what to do.
func TestRedisReadyWarnings(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // ADDR stands for the server's address
	}{
		{
			name: "no persistence",
			want: `Redis ADDR has no persistence (appendonly no, save ""): a restart empties it, losing every balance, hold and idempotency key, ` +
				"and tollgate then refuses to bill until an operator acts; turn on AOF (CONFIG SET appendonly yes, and appendonly yes with appendfsync everysec in redis.conf)",
		},
		{
			name: "snapshots only",
			args: []string{"--save", "3600 1"},
			want: `Redis ADDR persists only by snapshots (save "3600 1", appendonly no): a crash loses the charges and credits since the last snapshot; ` +
				"turn on AOF (CONFIG SET appendonly yes, and appendonly yes with appendfsync everysec in redis.conf)",
		},
		{
			name: "AOF",
			args: []string{"--appendonly", "yes"},
		},
		{
			name: "CONFIG renamed away, as managed services do",
			args: []string{"--rename-command", "CONFIG", ""},
			want: "Redis ADDR refuses CONFIG GET (ERR unknown command 'config', with args beginning with: 'get' 'maxmemory-policy' ), as managed services often do: " +
				"tollgate cannot check that maxmemory-policy is noeviction and that persistence is on; make sure your provider's settings say so (an evicting policy loses money)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartOwnWith(t, tc.args...)
			s, logs := observed(t, srv.Addr)
			for range 3 {
				if err := s.Ready(ctx); err != nil {
					t.Fatalf("Ready: %v", err)
				}
			}
			var got []string
			for _, e := range logs.FilterLevelExact(zap.WarnLevel).All() {
				got = append(got, e.Message)
			}
			var want []string
			if tc.want != "" {
				want = []string{strings.ReplaceAll(tc.want, "ADDR", srv.Addr)}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("warnings after three checks:\n%q\nwant:\n%q", got, want)
			}
			if err := credit(s, "warn", "k"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRedisDataLoss: a Redis that loses its data (here a restart without
// persistence) makes every replica not ready and every call fail closed,
// including replicas started afterwards, with an error log; an operator's
// AcceptDataLoss on any replica lets all of them serve again.
func TestRedisDataLoss(t *testing.T) {
	srv := redistest.StartOwn(t)
	a, logs := observed(t, srv.Addr)
	if err := a.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := credit(a, "alice", "k1"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}

	err := a.Ready(ctx)
	var dl *ledger.DataLostError
	if !errors.As(err, &dl) || !errors.Is(err, ledger.ErrDataLost) || !errors.Is(err, ledger.ErrStoreUnavailable) {
		t.Fatalf("Ready after Redis came back empty: %v; want a *DataLostError", err)
	}
	want := "Redis lost tollgate's data (1 of its 1 marker keys are gone: tollgate:marker is missing): it restarted without persistence, was flushed, " +
		"or failed over to an empty replica, so balances, holds and idempotency keys written before may be gone. tollgate refuses to bill until an operator acts: " +
		"restore Redis from a backup if you can, then run `tollgate accept-data-loss` (POST /v1/store/accept-data-loss on the admin API) " +
		"to serve what Redis holds now, and check balances against your records"
	if err.Error() != want {
		t.Errorf("Ready = %v\nwant %s", err, want)
	}
	if n := logs.FilterMessage(want).FilterLevelExact(zap.ErrorLevel).Len(); n != 1 {
		t.Errorf("%d error logs of the loss, want 1", n)
	}
	if err := credit(a, "alice", "k1"); !errors.Is(err, ledger.ErrDataLost) {
		t.Fatalf("Credit after the loss: %v; want ErrDataLost (the key k1 is gone: it would pay out twice)", err)
	}
	if err := a.Ready(ctx); !errors.Is(err, ledger.ErrDataLost) {
		t.Fatalf("second Ready: %v; the loss must stay until an operator acts", err)
	}

	// A replica started now finds out too, from the tombstone.
	b, _ := observed(t, srv.Addr)
	if err := b.Ready(ctx); !errors.Is(err, ledger.ErrDataLost) {
		t.Fatalf("Ready of a replica started after the loss: %v; want ErrDataLost", err)
	}
	if err := b.AcceptDataLoss(ctx); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*ledger.RedisStore{"accepting": b, "other": a} {
		if err := s.Ready(ctx); err != nil {
			t.Fatalf("%s replica: Ready after AcceptDataLoss: %v", name, err)
		}
		if err := credit(s, "alice", "k-"+name); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if err := a.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRedisDataLossRemarked: a replica that started on the emptied Redis
// before the others checked marks it anew; the replicas that knew the old
// data still see that it was lost.
func TestRedisDataLossRemarked(t *testing.T) {
	srv := redistest.StartOwn(t)
	a, _ := observed(t, srv.Addr)
	if err := a.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client(t).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b, _ := observed(t, srv.Addr)
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("a replica that never saw the old data marks the empty Redis: %v", err)
	}
	if err := a.Ready(ctx); !errors.Is(err, ledger.ErrDataLost) || !strings.Contains(err.Error(), "its marker keys were written anew") {
		t.Fatalf("Ready of the replica that knew the old data: %v; want ErrDataLost", err)
	}
	if err := b.Ready(ctx); !errors.Is(err, ledger.ErrDataLost) {
		t.Fatalf("the other replica after the tombstone: %v; want ErrDataLost", err)
	}
}

// TestRedisReadyConcurrentFirstStart: replicas marking a new Redis at the
// same moment agree on one dataset.
func TestRedisReadyConcurrentFirstStart(t *testing.T) {
	srv := redistest.StartOwn(t)
	stores := make([]*ledger.RedisStore, 8)
	errs := make(chan error, len(stores))
	for i := range stores {
		stores[i], _ = observed(t, srv.Addr)
	}
	for _, s := range stores {
		go func() { errs <- s.Ready(ctx) }()
	}
	for range stores {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range stores {
		if err := s.Ready(ctx); err != nil {
			t.Fatalf("store %d on its second check: %v", i, err)
		}
	}
}

// TestRedisReadyWritesFail: Redis out of memory (maxmemory reached with
// noeviction) refuses writes while PING still works; Ready says so and
// what to do, and passes again once memory is raised, without traffic.
func TestRedisReadyWritesFail(t *testing.T) {
	srv := redistest.StartOwn(t)
	s, _ := observed(t, srv.Addr)
	admin := srv.Client(t)
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready before any write failed: %v (a healthy store writes no probe)", err)
	}
	if err := credit(s, "oom", "k"); !errors.Is(err, ledger.ErrStoreUnavailable) {
		t.Fatalf("Credit at maxmemory: %v; want ErrStoreUnavailable", err)
	}
	err := s.Ready(ctx)
	want := "ledger: store unavailable: writes fail (OOM command not allowed when used memory > 'maxmemory'.); " +
		"Redis is out of memory and refuses writes: raise maxmemory (CONFIG SET maxmemory, and in redis.conf) or give Redis more memory; " +
		"tollgate's keys must not be evicted, so deleting them is no remedy"
	if !errors.Is(err, ledger.ErrStoreUnavailable) || err == nil || err.Error() != want {
		t.Fatalf("Ready with writes failing: %v\nwant %s", err, want)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v (PING alone says all is well)", err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready once memory is raised: %v", err)
	}
	if err := credit(s, "oom", "k"); err != nil {
		t.Fatal(err)
	}
}

// TestRedisReadyCluster: on a cluster every master is checked: an
// evicting policy on one of them is found, and a master that lost its
// data (its markers gone) is named by its slots.
func TestRedisReadyCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	if len(c.Addrs) != 3 {
		t.Skipf("want a 3-master cluster, have %d", len(c.Addrs))
	}
	core, _ := observer.New(zap.InfoLevel)
	s := ledger.NewRedisStore(redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ContextTimeoutEnabled: true}), ledger.Options{Logger: zap.New(core)})
	t.Cleanup(func() { s.Close() })
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	// Every marker sits in its slot range, and every master holds some.
	node := func(i int) *redis.Client {
		cl := redis.NewClient(&redis.Options{Addr: c.Addrs[i]})
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	markersOn := map[string][]string{}
	for i := range c.Addrs {
		keys, err := node(i).Keys(ctx, "tollgate:marker:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		markersOn[c.Addrs[i]] = keys
		if len(keys) == 0 {
			t.Errorf("master %s holds no marker", c.Addrs[i])
		}
		for _, k := range keys {
			slot, err := node(i).ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if chunk, want := int(slot)/1024, chunkOf(t, s, k); chunk != want {
				t.Errorf("marker %s is in slot %d, outside its range %d", k, slot, want)
			}
		}
	}

	second := c.Addrs[1]
	if err := node(1).ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err(); err != nil {
		t.Fatal(err)
	}
	var pe *ledger.EvictionPolicyError
	if err := s.Ready(ctx); !errors.As(err, &pe) || pe.Node != second || pe.Policy != "volatile-lru" {
		t.Fatalf("Ready with one evicting master: %v; want it named", err)
	}
	if err := node(1).ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}

	// The second master loses its data.
	for _, k := range markersOn[second] {
		if err := node(1).Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Ready(ctx)
	if !errors.Is(err, ledger.ErrDataLost) || !strings.Contains(err.Error(), fmt.Sprintf("%d of its 16 marker keys are gone", len(markersOn[second]))) {
		t.Fatalf("Ready after one master lost its data: %v", err)
	}
	if err := s.AcceptDataLoss(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

// chunkOf returns the slot range (0-15) the marker key k belongs to: the
// position of k in the store's marker list.
func chunkOf(t *testing.T, s *ledger.RedisStore, k string) int {
	t.Helper()
	for i, m := range ledger.MarkerKeys(s) {
		if m == k {
			return i
		}
	}
	t.Fatalf("%s is not one of the store's marker keys", k)
	return -1
}

// TestRedisHungCallsEnd: with Redis hung (SIGSTOP), calls end at their
// deadline with ErrStoreUnavailable, and so does Ready; after SIGCONT all
// works again.
func TestRedisHungCallsEnd(t *testing.T) {
	srv := redistest.StartOwn(t)
	s, _ := observed(t, srv.Addr)
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Resume() })
	calls := map[string]func(context.Context) error{
		"Reserve": func(ctx context.Context) error { return s.Reserve(ctx, "hung", "h", 1, time.Minute) },
		"Account": func(ctx context.Context) error { _, err := s.Account(ctx, "hung"); return err },
		"Ready":   s.Ready,
	}
	for name, call := range calls {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start := time.Now()
		err := call(short)
		cancel()
		if !errors.Is(err, ledger.ErrStoreUnavailable) {
			t.Errorf("%s with Redis hung: %v; want ErrStoreUnavailable", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s with Redis hung took %s; its deadline was 200ms", name, d)
		}
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}
