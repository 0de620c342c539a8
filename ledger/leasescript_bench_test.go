package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/usage"
)

// BenchmarkLeaseSyncScript measures what lease.lua costs redis-server per
// charge it applies: one op is one charge, sent in syncs of 1, 64 and
// 512 charges of one customer, as a busy replica sends them (go run
// ./bench sends a few hundred per sync at 32 clients). server-µs/charge
// is the CPU time redis-server reports having used (INFO cpu) divided by
// the charges, the figure that adds to every request's cost on a
// Redis-backed deployment; ns/op also counts this process and the
// network.
func BenchmarkLeaseSyncScript(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { rdb.Close() })
	rs := NewRedisStore(rdb, Options{})
	b.Cleanup(func() { rs.Close() })
	ctx := context.Background()
	retention := (35 * 24 * time.Hour).Milliseconds()
	for _, per := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("charges=%d", per), func(b *testing.B) {
			cust := "sync-bench-" + newToken()[:6]
			if _, err := rs.Credit(ctx, Credit{Customer: cust, Amount: MaxAmount / 2, Kind: KindGrant, Key: "fund"}); err != nil {
				b.Fatal(err)
			}
			keys := customerKeys(cust)
			b.Cleanup(func() { rdb.Del(context.Background(), keys...) })
			body := chargeBody(Charge{Reference: "req", Route: "openai.chat", Model: "gpt-4o-mini", Tokens: usage.Tokens{InputTokens: 1200, OutputTokens: 250}}, time.Now()).json()
			var seq int64
			next := 0
			cpu0 := serverCPU(b, rdb)
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(per, b.N-done)
				now := time.Now().UnixMilli()
				seq++
				args := make([]any, 0, 12+5*n)
				args = append(args, "bench-lease", now, retention, now+10_000, 0, 0, 0, 25, 0, seq, 0, n)
				for range n {
					args = append(args, "s", "tg_"+strconv.Itoa(next), now, 700, body)
					next++
				}
				if err := leaseScript.Run(ctx, rdb, keys, args...).Err(); err != nil {
					b.Fatal(err)
				}
				done += n
			}
			b.StopTimer()
			b.ReportMetric(float64(serverCPU(b, rdb)-cpu0)/float64(time.Microsecond)/float64(b.N), "server-µs/charge")
		})
	}
}

// serverCPU returns the CPU time (user and system) redis-server reports
// having used.
func serverCPU(b *testing.B, rdb *redis.Client) time.Duration {
	text, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "used_cpu_sys" && k != "used_cpu_user") {
			continue
		}
		us, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("INFO cpu %s: %v", k, err)
		}
		total += time.Duration(us * float64(time.Second))
	}
	return total
}
