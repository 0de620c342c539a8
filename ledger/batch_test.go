package ledger

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
)

// pipelineSizes is a go-redis hook that records how many commands each
// pipeline carried.
type pipelineSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (h *pipelineSizes) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *pipelineSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}

func (h *pipelineSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.sizes = append(h.sizes, len(cmds))
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// largest returns the largest pipeline seen.
func (h *pipelineSizes) largest() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.sizes {
		n = max(n, s)
	}
	return n
}

// echoScript returns its first argument, or fails when it is "fail".
var echoScript = redis.NewScript(`
if ARGV[1] == 'fail' then
  return redis.error_reply('ERR asked to fail')
end
redis.call('INCR', KEYS[1])
return ARGV[1]`)

// slowScript keeps Redis busy for ARGV[1] milliseconds of its own clock.
var slowScript = redis.NewScript(`
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + ARGV[1] * 1000
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] >= stop
return 1`)

// batchClients returns a single-node and a cluster client, each with a
// pipelineSizes hook, for subtests of t.
func batchClients(t *testing.T) map[string]func(t *testing.T) (redis.UniversalClient, *pipelineSizes) {
	return map[string]func(t *testing.T) (redis.UniversalClient, *pipelineSizes){
		"redis": func(t *testing.T) (redis.UniversalClient, *pipelineSizes) {
			srv := redistest.Start(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
			h := &pipelineSizes{}
			c.AddHook(h)
			t.Cleanup(func() { c.Close() })
			return c, h
		},
		"cluster": func(t *testing.T) (redis.UniversalClient, *pipelineSizes) {
			cl := redistest.StartCluster(t)
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, Protocol: 2})
			h := &pipelineSizes{}
			c.AddHook(h)
			t.Cleanup(func() { c.Close() })
			return c, h
		},
	}
}

// TestBatcherRepliesPerCaller sends many concurrent calls, for keys spread
// over every cluster slot range, some of them failing, and checks that each
// caller gets exactly its own reply or error, that each script ran once,
// and that calls were in fact batched.
func TestBatcherRepliesPerCaller(t *testing.T) {
	for name, open := range batchClients(t) {
		t.Run(name, func(t *testing.T) {
			client, sizes := open(t)
			ctx := context.Background()
			prefix := fmt.Sprintf("tollgate:batch-%d", time.Now().UnixNano())
			b := newBatcher(client, 1)
			const callers, rounds = 64, 20
			fails := 0 // rounds in which a caller asks to fail
			for r := range rounds {
				if r%7 == 3 {
					fails++
				}
			}
			var wg sync.WaitGroup
			for g := range callers {
				wg.Go(func() {
					// A key of its own per caller, so that callers land
					// on different slots and nodes.
					key := fmt.Sprintf("%s:{c%d}", prefix, g)
					for r := range rounds {
						arg := fmt.Sprintf("%d/%d", g, r)
						if r%7 == 3 {
							arg = "fail"
						}
						v, err := b.run(ctx, echoScript, []string{key}, arg)
						if arg == "fail" {
							if err == nil || !strings.Contains(err.Error(), "asked to fail") {
								t.Errorf("caller %d round %d: %v, %v; want its own script error", g, r, v, err)
							}
							continue
						}
						if err != nil || v != arg {
							t.Errorf("caller %d round %d: %v, %v; want %q", g, r, v, err, arg)
						}
					}
				})
			}
			wg.Wait()
			for g := range callers {
				key := fmt.Sprintf("%s:{c%d}", prefix, g)
				n, err := client.Get(ctx, key).Int()
				client.Del(ctx, key)
				if want := rounds - fails; err != nil || n != want {
					t.Errorf("caller %d: script ran %d times (%v); want %d", g, n, err, want)
				}
			}
			if n := sizes.largest(); n < 2 {
				t.Errorf("largest pipeline had %d commands; %d concurrent callers should have been batched", n, callers)
			}
		})
	}
}

// TestBatcherReloadsScripts flushes the script cache under a batch: every
// EVALSHA then fails with NOSCRIPT and must be resent with EVAL.
func TestBatcherReloadsScripts(t *testing.T) {
	for name, open := range batchClients(t) {
		t.Run(name, func(t *testing.T) {
			client, sizes := open(t)
			ctx := context.Background()
			b := newBatcher(client, 1)
			key := fmt.Sprintf("tollgate:{reload-%d}", time.Now().UnixNano())
			t.Cleanup(func() { client.Del(context.Background(), key) })
			flush := func() {
				err := client.ScriptFlush(ctx).Err()
				if cc, ok := client.(*redis.ClusterClient); ok {
					err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.ScriptFlush(ctx).Err() })
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for round := range 5 {
				flush()
				// Hold the only slot with a slow script so that the
				// others queue and go out as one pipeline.
				var wg sync.WaitGroup
				wg.Go(func() {
					if _, err := b.run(ctx, slowScript, []string{key}, 50); err != nil {
						t.Error(err)
					}
				})
				waitInFlight(t, b, 1)
				for i := range 10 {
					wg.Go(func() {
						arg := fmt.Sprintf("%d-%d", round, i)
						if v, err := b.run(ctx, echoScript, []string{key}, arg); err != nil || v != arg {
							t.Errorf("after SCRIPT FLUSH: %v, %v; want %q", v, err, arg)
						}
					})
				}
				wg.Wait()
			}
			if n := sizes.largest(); n < 2 {
				t.Errorf("largest pipeline had %d commands; want a batch", n)
			}
		})
	}
}

// waitInFlight waits until b has n pipelines in flight, so that the calls
// a test makes next have to queue.
func waitInFlight(t *testing.T, b *batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		got := b.inFlight
		b.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pipelines in flight after 5s; want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBatcherCancelledWhileQueued checks that a caller giving up while its
// call is still queued gets its context's error and that the call is never
// sent.
func TestBatcherCancelledWhileQueued(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	ctx := context.Background()
	b := newBatcher(client, 1)
	key := fmt.Sprintf("tollgate:{cancel-%d}", time.Now().UnixNano())
	t.Cleanup(func() { client.Del(context.Background(), key) })

	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := b.run(ctx, slowScript, []string{key}, 300); err != nil {
			t.Error(err)
		}
	})
	waitInFlight(t, b, 1)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := b.run(short, echoScript, []string{key}, "never"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued call whose deadline passed: %v; want context.DeadlineExceeded", err)
	}
	wg.Wait()
	// The slot is free again and the queue empty: the next call goes out
	// alone and is the only one that ran.
	if v, err := b.run(ctx, echoScript, []string{key}, "after"); err != nil || v != "after" {
		t.Fatalf("call after the cancelled one: %v, %v", v, err)
	}
	if n, err := client.Get(ctx, key).Int(); err != nil || n != 1 {
		t.Errorf("echo ran %d times (%v); want 1: the cancelled call must never be sent", n, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inFlight != 0 || len(b.queue) != 0 {
		t.Errorf("batcher left with %d in flight and %d queued", b.inFlight, len(b.queue))
	}
}

// TestBatcherUnavailable checks that when Redis is gone every caller of a
// batch gets the connection error, which the store reports as
// ErrStoreUnavailable, and that the batcher recovers with Redis.
func TestBatcherUnavailable(t *testing.T) {
	srv := redistest.StartOwn(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: 1, DialerRetries: 1, DialTimeout: time.Second, Protocol: 2})
	s := NewRedisStore(client, Options{})
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			err := s.Reserve(ctx, "down", fmt.Sprintf("h%d", i), 1, time.Minute)
			if !errors.Is(err, ErrStoreUnavailable) {
				t.Errorf("reserve %d with Redis stopped: %v; want ErrStoreUnavailable", i, err)
			}
			var op *net.OpError
			if !errors.As(err, &op) {
				t.Errorf("reserve %d: %v does not keep its cause", i, err)
			}
		})
	}
	wg.Wait()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := range 32 {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i)
			if _, err := s.Credit(ctx, Credit{Customer: "back", Amount: 1, Kind: KindGrant, Key: key}); err != nil {
				t.Errorf("credit after restart: %v", err)
			}
		})
	}
	wg.Wait()
	if a, err := s.Account(ctx, "back"); err != nil || a.Balance != 32 {
		t.Errorf("account after restart = %+v, %v; want 32", a, err)
	}
}

// relay forwards TCP connections to a Redis and can make the ones open
// now hang (stop forwarding in both directions) while new ones work: a
// connection stuck on a half-dead network path, or the first moments of
// a failover.
type relay struct {
	addr   string
	mu     sync.Mutex
	conns  []*relayConn
	closed chan struct{}
}

type relayConn struct {
	hung atomic.Bool
}

func newRelay(t *testing.T, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), closed: make(chan struct{})}
	var open []net.Conn
	t.Cleanup(func() {
		close(r.closed)
		ln.Close()
		r.mu.Lock()
		for _, c := range open {
			c.Close()
		}
		r.mu.Unlock()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			rc := &relayConn{}
			r.mu.Lock()
			r.conns = append(r.conns, rc)
			open = append(open, client, server)
			r.mu.Unlock()
			go r.pump(rc, client, server)
			go r.pump(rc, server, client)
		}
	}()
	return r
}

// pump copies from src to dst until either closes or rc hangs.
func (r *relay) pump(rc *relayConn, src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if rc.hung.Load() {
			<-r.closed
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// hangAll makes every connection open now hang.
func (r *relay) hangAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.hung.Store(true)
	}
}

// TestBatcherNotStuckBehindHungPipeline: when the connections in use hang,
// their callers give up at their deadlines, and so do the pipelines they
// were in, so that the calls queued behind go out on new connections
// rather than wait for the client's read timeout (30s here).
func TestBatcherNotStuckBehindHungPipeline(t *testing.T) {
	srv := redistest.Start(t)
	r := newRelay(t, srv.Addr)
	client := redis.NewClient(&redis.Options{
		Addr: r.addr, ContextTimeoutEnabled: true, MaxRetries: 1, DialerRetries: 1, Protocol: 2,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, PoolSize: 8,
	})
	s := NewRedisStore(client, Options{})
	t.Cleanup(func() { s.Close() })

	var served, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
				_, err := s.Account(ctx, "nobody")
				cancel()
				switch {
				case err == nil:
					served.Add(1)
				case errors.Is(err, ErrStoreUnavailable):
					failed.Add(1)
				default:
					t.Errorf("account: %v; want nil or ErrStoreUnavailable", err)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // every pooled connection busy
	r.hangAll()
	time.Sleep(time.Second) // the callers on hung connections give up
	before := served.Load()
	time.Sleep(time.Second)
	after := served.Load()
	close(stop)
	wg.Wait()
	if failed.Load() == 0 {
		t.Fatal("no call failed: the connections did not hang")
	}
	if after == before {
		t.Errorf("no call was served in the second after the hung connections' callers gave up: calls wait behind a stuck pipeline")
	}
}
