package ledger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/usage"
)

// benchParallelism multiplies GOMAXPROCS into the number of goroutines of
// every sub-benchmark, so that the network-bound ones are measured with
// requests in flight as a proxy would have them, and all with the same.
const benchParallelism = 8

// BenchmarkReserveSettle measures what every metered request costs the
// ledger, a Reserve followed by a Settle, against each store, and a plain
// Redis INCRBY round trip on the same server in the same run as the
// baseline. Each reports ops/s (one op = one reserve+settle pair, or one
// INCRBY); compare the ratios, not the absolute numbers. Each goroutine
// waits for its own Settle, which the proxy never does (it settles in the
// background): on bolt that wait includes settleGap, so bolt's ops/s
// here is bounded by goroutines ÷ 25 ms; go run ./bench -store bolt
// measures what the embedded store costs a request.
func BenchmarkReserveSettle(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)

	b.Run("incrby", func(b *testing.B) {
		key := "tollgate:bench:incrby:" + randomHex(4)
		b.Cleanup(func() { rdb.Del(context.Background(), key) })
		run(b, func(_ int, _ int64) error { return rdb.IncrBy(context.Background(), key, 1).Err() })
	})
	b.Run("redis", func(b *testing.B) {
		s := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{})
		b.Cleanup(func() { s.Close() })
		benchStore(b, s, func(customers []string) {
			for _, c := range customers {
				rdb.Del(context.Background(), ledger.CustomerKeys(c)...)
			}
		})
	})
	b.Run("bolt", func(b *testing.B) {
		s, err := ledger.OpenBolt(filepath.Join(b.TempDir(), "bench.db"), ledger.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchStore(b, s, nil)
	})
}

// benchStore runs reserve+settle pairs, each goroutine for its own
// customer, as concurrent requests of different customers would.
func benchStore(b *testing.B, s ledger.Store, forget func([]string)) {
	ctx := context.Background()
	prefix := "bench-" + randomHex(4)
	customers := make([]string, benchParallelism*runtime.GOMAXPROCS(0))
	for i := range customers {
		customers[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	if forget != nil {
		b.Cleanup(func() { forget(customers) })
	}
	run(b, func(g int, i int64) error {
		c := customers[g]
		if i == 0 {
			// Funded on first use, inside the timed section: one credit
			// per goroutine against thousands of reserve+settle pairs.
			if _, err := s.Credit(ctx, ledger.Credit{Customer: c, Amount: 1 << 50, Kind: ledger.KindGrant, Key: "fund"}); err != nil {
				return err
			}
		}
		hold := fmt.Sprintf("h%d", i)
		if err := s.Reserve(ctx, c, hold, 1000, time.Minute); err != nil {
			return err
		}
		_, err := s.Settle(ctx, c, hold, 700, ledger.Charge{Reference: hold, Model: "gpt-4o-mini", Tokens: usage.Tokens{InputTokens: 1000, OutputTokens: 100}})
		return err
	})
}

// run calls op from benchParallelism*GOMAXPROCS goroutines; op gets its
// goroutine's number and how many ops that goroutine has done. It reports
// the total rate as ops/s, once, after the parallel section.
func run(b *testing.B, op func(g int, i int64) error) {
	var goroutines, ops atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := int(goroutines.Add(1) - 1)
		var i int64
		for pb.Next() {
			if err := op(g, i); err != nil {
				b.Error(err)
				return
			}
			i++
			ops.Add(1)
		}
	})
	b.ReportMetric(float64(ops.Load())/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkReserveSettleLots is BenchmarkReserveSettle for customers with
// 1, 100 and 1000 active lots of mixed priorities and expiries, funded
// before the timer starts: a reserve never looks at lots and a settle
// takes from the first in burn order, so ops/s must not fall with the
// number of lots.
func BenchmarkReserveSettleLots(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	for _, lots := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("redis/lots=%d", lots), func(b *testing.B) {
			s := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{})
			b.Cleanup(func() { s.Close() })
			benchLots(b, s, lots, func(customers []string) {
				for _, c := range customers {
					rdb.Del(context.Background(), ledger.CustomerKeys(c)...)
				}
			})
		})
		b.Run(fmt.Sprintf("bolt/lots=%d", lots), func(b *testing.B) {
			s, err := ledger.OpenBolt(filepath.Join(b.TempDir(), "bench.db"), ledger.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			benchLots(b, s, lots, nil)
		})
	}
}

// benchLots gives each goroutine's customer n lots, concurrently, then
// runs reserve+settle pairs.
func benchLots(b *testing.B, s ledger.Store, n int, forget func([]string)) {
	ctx := context.Background()
	prefix := "bench-" + randomHex(4)
	customers := make([]string, benchParallelism*runtime.GOMAXPROCS(0))
	for i := range customers {
		customers[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	if forget != nil {
		b.Cleanup(func() { forget(customers) })
	}
	never := time.Time{}
	var wg sync.WaitGroup
	for _, c := range customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				p := i % 5 * 25
				exp := never
				if i%2 == 1 {
					exp = time.Now().Add(time.Duration(24+i) * time.Hour)
				}
				if _, err := s.Credit(ctx, ledger.Credit{Customer: c, Amount: 1 << 40, Kind: ledger.KindGrant, Key: fmt.Sprintf("fund-%d", i), Priority: &p, ExpiresAt: exp}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	run(b, func(g int, i int64) error {
		c := customers[g]
		hold := fmt.Sprintf("h%d", i)
		if err := s.Reserve(ctx, c, hold, 1000, time.Minute); err != nil {
			return err
		}
		_, err := s.Settle(ctx, c, hold, 700, ledger.Charge{Reference: hold, Model: "gpt-4o-mini", Tokens: usage.Tokens{InputTokens: 1000, OutputTokens: 100}})
		return err
	})
}

// growthCharge is the charge the growth benchmarks settle: one like
// tollgate's for a chat request.
func growthCharge(hold string) ledger.Charge {
	return ledger.Charge{Reference: hold, Route: "/v1/chat/completions", Model: "gpt-4o-mini", Tokens: usage.Tokens{InputTokens: 1042, CachedInputTokens: 512, OutputTokens: 120}}
}

// BenchmarkBoltGrowth runs reserve+settle pairs of one customer, one at
// a time, as a proxy settles requests with ids and charges like
// tollgate's, and reports per pair the bolt commits (each fsyncs twice)
// and the bytes the file grew by (pages in use, free pages not counted).
func BenchmarkBoltGrowth(b *testing.B) {
	s, err := ledger.OpenBolt(filepath.Join(b.TempDir(), "bench.db"), ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	const cust = "cus_growth"
	if _, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1 << 50, Kind: ledger.KindGrant, Key: "fund"}); err != nil {
		b.Fatal(err)
	}
	tx0, err := s.TxID()
	if err != nil {
		b.Fatal(err)
	}
	used0, err := s.UsedBytes()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		hold := requestLikeID(time.Now())
		if err := s.Reserve(ctx, cust, hold, 1000, time.Minute); err != nil {
			b.Fatal(err)
		}
		ch := growthCharge(hold)
		if _, err := s.Settle(ctx, cust, hold, 700, ch); err != nil {
			b.Fatal(err)
		}
		n++
	}
	tx1, err := s.TxID()
	if err != nil {
		b.Fatal(err)
	}
	used1, err := s.UsedBytes()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(tx1-tx0)/float64(n), "commits/req")
	b.ReportMetric(float64(used1-used0)/float64(n), "B/req")
}

// requestLikeID returns a hold id shaped like the proxy's request ids: the
// unix time in ms as 12 hex digits after "tg_", then 20 random hex digits.
// The time in front makes a customer's ids arrive nearly in order, which
// is what the stores' settled-hold records see in production.
func requestLikeID(now time.Time) string {
	return fmt.Sprintf("tg_%012x%s", now.UnixMilli()&(1<<48-1), randomHex(10))
}

// BenchmarkRedisGrowth runs reserve+settle pairs of one customer as the
// proxy does (the settlements concurrent, off the request's path) and
// reports per pair the bytes the customer's keys grew by (MEMORY USAGE),
// with and without leases: the ledger entry, and the settled marker kept
// for the retention.
func BenchmarkRedisGrowth(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	stores := map[string]func() ledger.Store{
		"redis": func() ledger.Store {
			return ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{})
		},
		"redis-leases": func() ledger.Store {
			return ledger.NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{}, ledger.LeaseOptions{})
		},
	}
	for _, name := range []string{"redis", "redis-leases"} {
		b.Run(name, func(b *testing.B) {
			s := stores[name]()
			ctx := context.Background()
			cust := "cus_growth_" + randomHex(4)
			b.Cleanup(func() {
				s.Close()
				rdb.Del(context.Background(), ledger.CustomerKeys(cust)...)
			})
			if _, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1 << 50, Kind: ledger.KindGrant, Key: "fund"}); err != nil {
				b.Fatal(err)
			}
			size := func() int64 {
				var n int64
				for _, k := range ledger.CustomerKeys(cust) {
					v, _ := rdb.MemoryUsage(ctx, k).Result()
					n += v
				}
				return n
			}
			used0 := size()
			var wg sync.WaitGroup
			n := 0
			for b.Loop() {
				hold := requestLikeID(time.Now())
				if err := s.Reserve(ctx, cust, hold, 1000, time.Minute); err != nil {
					b.Fatal(err)
				}
				ch := growthCharge(hold)
				wg.Go(func() {
					if _, err := s.Settle(ctx, cust, hold, 700, ch); err != nil {
						b.Error(err)
					}
				})
				n++
			}
			wg.Wait()
			b.ReportMetric(float64(size()-used0)/float64(n), "B/req")
		})
	}
}

// BenchmarkBoltReserveBesideHolds measures a Reserve and a Release of one
// customer on the embedded store while that customer already has 0, 100
// or 1000 holds open, as a busy customer has at 32 clients with
// settlements waiting for their commit (settleGap). Neither writes to the
// file. The time per pair grows with the holds beside it only by the walk
// over a slice that sums them (no map walk, and no expiry scan before the
// first of them can expire).
func BenchmarkBoltReserveBesideHolds(b *testing.B) {
	ctx := context.Background()
	for _, open := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("open=%d", open), func(b *testing.B) {
			s, err := ledger.OpenBolt(filepath.Join(b.TempDir(), "bench.db"), ledger.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			const c = "busy"
			if _, err := s.Credit(ctx, ledger.Credit{Customer: c, Amount: 1 << 50, Kind: ledger.KindGrant, Key: "fund"}); err != nil {
				b.Fatal(err)
			}
			for i := range open {
				if err := s.Reserve(ctx, c, fmt.Sprintf("open-%d", i), 1000, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = fmt.Sprintf("h%d", i)
			}
			b.ResetTimer()
			for _, id := range ids {
				if err := s.Reserve(ctx, c, id, 1000, time.Minute); err != nil {
					b.Fatal(err)
				}
				if err := s.Release(ctx, c, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBoltSettleBatch measures what the embedded store's writer
// spends on one settlement when settlements arrive in batches, as they do
// from a busy proxy: 256 holds of one customer (or of 32) are reserved
// with the timer stopped, then queued at once with QueueSettle and
// waited for. One op is one settlement; its time includes the share of
// its commit (and fsync) and of settleGap's wait, so allocs/op is the
// figure to compare between versions, ns/op only within one run.
func BenchmarkBoltSettleBatch(b *testing.B) {
	const batch = 256
	for _, customers := range []int{1, 32} {
		b.Run(fmt.Sprintf("customers=%d", customers), func(b *testing.B) {
			b.ReportAllocs()
			s, err := ledger.OpenBolt(filepath.Join(b.TempDir(), "bench.db"), ledger.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			ctx := context.Background()
			names := make([]string, customers)
			for i := range names {
				names[i] = fmt.Sprintf("c%d", i)
				if _, err := s.Credit(ctx, ledger.Credit{Customer: names[i], Amount: 1 << 50, Kind: ledger.KindGrant, Key: "fund"}); err != nil {
					b.Fatal(err)
				}
			}
			ch := ledger.Charge{Model: "gpt-4o-mini", Tokens: usage.Tokens{InputTokens: 1000, OutputTokens: 100}}
			var wg sync.WaitGroup
			next := 0
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				b.StopTimer()
				ids := make([]string, n)
				for i := range ids {
					ids[i] = fmt.Sprintf("h%d", next)
					next++
					if err := s.Reserve(ctx, names[i%customers], ids[i], 1000, time.Minute); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				wg.Add(n)
				for i, id := range ids {
					ch.Reference = id
					if !s.QueueSettle(names[i%customers], id, 700, ch, func(_ ledger.Entry, err error) {
						if err != nil {
							b.Error(err)
						}
						wg.Done()
					}) {
						b.Fatalf("QueueSettle of %s refused", id)
					}
				}
				wg.Wait()
				done += n
			}
		})
	}
}
