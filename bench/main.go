// Command bench measures what tollgate adds to a request: it starts a fake
// OpenAI upstream, a bare httputil.ReverseProxy and tollgate (holds in a
// redis-server it starts itself, or in the embedded bolt file), drives the
// same load through both proxies, and prints throughput and latency for each
// and their ratio.
//
//	go run ./bench                      # JSON and SSE, 1 and 32 clients, Redis
//	go run ./bench -duration 10s -rounds 5 -clients 1,8,32
//	go run ./bench -store bolt -cpuprofile tollgate.prof
//	go run ./bench -cases json -clients 32 -cpuprofile tollgate.prof
//	go run ./bench -store bolt -clients 32 -customers 32
//
// Latency is the whole response for JSON and the time to the first body
// byte for SSE (what a user waits before text appears); the stream is then
// read to the end before the client's next request. Each measurement runs
// -rounds times, alternating which proxy goes first, and the table shows the
// median throughput and the percentiles of all samples together, so both
// proxies see the same machine noise. CPU/req is the CPU time this process
// and redis-server used in the measured windows divided by the requests
// served: unlike throughput it does not depend on how much of a shared
// machine the run got, so it compares well between runs, and "added
// CPU/req" is what metering costs per request. Allocs/req counts the heap
// allocations of this process in the same window, per request.
//
// In the JSON and SSE tables every client names the same customer unless
// -customers spreads them over several (client i names customer i mod n,
// so at most as many customers as clients take part). One busy customer
// is the most contended case for the stores' per-customer locks, and the
// cheapest for their writes (one lease, one customer's pages per commit);
// many customers are the usual case. The near-zero table and the memory
// measurement use one customer whatever -customers says.
//
// A last table drives tollgate alone for a customer with a near-zero
// balance: 0.000001 credits, less than one request's estimate, so every
// request goes to the store for a hold of its own and is refused with 402
// before anything is forwarded. It shows what the refusal path costs (one
// store decision per request, on the embedded store no write at all) and
// has no bare counterpart.
//
// The process runs the garbage collector as tollgate serve does: at
// proxyconfig.GCPercent unless GOGC is set (GOGC=100 go run ./bench for Go's
// default); the header line says which.
//
// Everything but Redis runs in this one process and shares its CPUs: the
// load generator, the upstream and the proxy under test. The absolute
// numbers are therefore lower than a production sidecar's; the ratios
// compare like with like. It is a tool, not a test: it never runs in
// make test.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/proxyconfig"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/proxy"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	duration   time.Duration
	warmup     time.Duration
	rounds     int
	clients    []int
	modes      []string
	events     int
	store      string
	customers  int
	cpuProfile string
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	var clients, modes string
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "length of one measurement")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured load before each measurement")
	fs.IntVar(&o.rounds, "rounds", 3, "measurements per proxy and case, alternating the order")
	fs.StringVar(&clients, "clients", "1,32", "comma-separated numbers of concurrent clients")
	fs.StringVar(&modes, "cases", "json,sse", "comma-separated cases: json (whole response) and sse (time to first byte)")
	fs.IntVar(&o.events, "events", 20, "content events per SSE stream (plus role, finish, usage and [DONE])")
	fs.StringVar(&o.store, "store", "redis", "tollgate's credit store: redis (a redis-server this command starts, with credit leases as tollgate serve defaults), redis-noleases (every request reserves in Redis) or bolt")
	fs.IntVar(&o.customers, "customers", 1, "customers the clients are spread over (client i names customer i mod n)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the last tollgate measurement to this file, and of the last bare proxy measurement to this file + \".bare\" (compare them with go tool pprof -diff_base)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-clients: %q is not a positive number", s)
		}
		o.clients = append(o.clients, n)
	}
	for _, m := range strings.Split(modes, ",") {
		m = strings.TrimSpace(m)
		if m != "json" && m != "sse" {
			return o, fmt.Errorf("-cases: %q is neither json nor sse", m)
		}
		o.modes = append(o.modes, m)
	}
	switch {
	case o.duration <= 0, o.warmup < 0, o.rounds < 1, o.events < 1, o.customers < 1:
		return o, errors.New("-duration, -rounds, -events and -customers must be positive, -warmup not negative")
	case o.store != "redis" && o.store != "redis-noleases" && o.store != "bolt":
		return o, fmt.Errorf("-store: %q is not redis, redis-noleases or bolt", o.store)
	}
	return o, nil
}

func run(args []string, out io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	// The collector as tollgate serve sets it; both proxies share it.
	gogc, set := os.LookupEnv("GOGC")
	if !set {
		debug.SetGCPercent(proxyconfig.GCPercent)
		gogc = strconv.Itoa(proxyconfig.GCPercent) + " (tollgate serve's default)"
	}

	up, err := listen(newUpstream(o.events))
	if err != nil {
		return err
	}
	defer up.Close()
	upURL, _ := url.Parse("http://" + up.Addr)

	bare, err := listen(bareProxy(upURL))
	if err != nil {
		return err
	}
	defer bare.Close()

	store, storeCPU, stopStore, err := openStore(o.store)
	if err != nil {
		return err
	}
	defer stopStore()
	cfg, err := config.Parse(strings.NewReader(strings.ReplaceAll(tollgateConfig, "UPSTREAM", upURL.String())), func(string) (string, bool) { return "", false })
	if err != nil {
		return fmt.Errorf("tollgate config: %w", err)
	}
	tg, err := proxy.New(proxyconfig.Settings(cfg), store, proxy.Options{Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	tollgate, err := listen(tg)
	if err != nil {
		return err
	}
	defer func() {
		tollgate.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tg.Drain(ctx)
	}()
	// Enough credits that no request of the run is ever refused.
	customers := benchCustomers(o.customers)
	for _, c := range customers {
		if _, err := store.Credit(context.Background(), ledger.Credit{
			Customer: c, Amount: 1_000_000_000 * money.Credit, Kind: ledger.KindGrant, Key: "bench",
		}); err != nil {
			return fmt.Errorf("credit the bench customer %s: %w", c, err)
		}
	}
	// Less than one request's estimate: every request of it is refused.
	if _, err := store.Credit(context.Background(), ledger.Credit{
		Customer: lowCustomer, Amount: 1, Kind: ledger.KindGrant, Key: "bench",
	}); err != nil {
		return fmt.Errorf("credit the near-zero customer: %w", err)
	}

	// The profiles: tollgate's measurements and the bare proxy's.
	var profile, bareProfile *os.File
	if o.cpuProfile != "" {
		if profile, err = os.Create(o.cpuProfile); err != nil {
			return err
		}
		defer profile.Close()
		if bareProfile, err = os.Create(o.cpuProfile + ".bare"); err != nil {
			return err
		}
		defer bareProfile.Close()
	}

	fmt.Fprintf(out, "tollgate bench: %s, GOMAXPROCS=%d, GOGC=%s, %d CPUs, store=%s, clients spread over up to %d customer(s), %s × %d rounds per case, SSE %d content events\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), gogc, runtime.NumCPU(), o.store, o.customers, o.duration, o.rounds, o.events)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tclients\tproxy\treq/s\tp50\tp99\tCPU/req\tallocs/req\tthroughput ratio\tadded p50\tadded p99\tadded CPU/req\tadded allocs/req\t")
	leaseStats := func() ledger.LeaseStats { return ledger.LeaseStats{} }
	if ls, ok := store.(*ledger.LeaseStore); ok {
		leaseStats = ls.Stats
	}
	cpu := func() cpuTime {
		return cpuTime{process: processCPU(), store: storeCPU(), allocs: heapAllocs(), lease: leaseStats()}
	}
	var split []string // where tollgate's CPU went, per case
	for _, mode := range o.modes {
		for _, n := range o.clients {
			var b, t result
			for r := range o.rounds {
				order := []*target{{name: "bare", addr: bare.Addr, res: &b}, {name: "tollgate", addr: tollgate.Addr, res: &t}}
				if r%2 == 1 {
					slices.Reverse(order)
				}
				for _, tgt := range order {
					if profile != nil {
						f := profile
						if tgt.name == "bare" {
							f = bareProfile
						}
						if err := startProfile(f); err != nil {
							return err
						}
					}
					m, err := measure(tgt.addr, mode, customers, n, o, cpu)
					if profile != nil {
						pprof.StopCPUProfile()
					}
					if err != nil {
						return fmt.Errorf("%s %s %d clients: %w", tgt.name, mode, n, err)
					}
					tgt.res.add(m)
				}
			}
			bp50, bp99 := b.percentiles()
			tp50, tp99 := t.percentiles()
			label := map[string]string{"json": "JSON", "sse": "SSE TTFB"}[mode]
			fmt.Fprintf(tw, "%s\t%d\tbare\t%.0f\t%s\t%s\t%s\t%.0f\t\t\t\t\t\t\n", label, n, b.rate(), ms(bp50), ms(bp99), us(b.cpuPerRequest()), b.allocsPerRequest())
			fmt.Fprintf(tw, "%s\t%d\ttollgate\t%.0f\t%s\t%s\t%s\t%.0f\t%.3f×\t%+.3fms\t%+.3fms\t%+.0fµs\t%+.0f\t\n", label, n, t.rate(), ms(tp50), ms(tp99), us(t.cpuPerRequest()), t.allocsPerRequest(),
				t.rate()/b.rate(), msf(tp50-bp50), msf(tp99-bp99), float64(t.cpuPerRequest()-b.cpuPerRequest())/float64(time.Microsecond), t.allocsPerRequest()-b.allocsPerRequest())
			if strings.HasPrefix(o.store, "redis") {
				line := fmt.Sprintf("%s, %d clients: tollgate %s = %s in this process + %s in redis-server; bare %s",
					label, n, us(t.cpuPerRequest()), us(t.cpu.process/time.Duration(t.n)), us(t.cpu.store/time.Duration(t.n)), us(b.cpuPerRequest()))
				if l := t.cpu.lease; l.Lent+l.Reserved > 0 {
					line += fmt.Sprintf("; %.1f%% of holds lent, %.1f requests per lease sync (%d syncs, %d failed)",
						100*float64(l.Lent)/float64(l.Lent+l.Reserved), float64(t.n)/float64(max(l.Syncs, 1)), l.Syncs, l.SyncFailures)
				}
				split = append(split, line)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := nearZero(out, tollgate.Addr, o, cpu); err != nil {
		return err
	}
	if err := streamMemory(out, bare.Addr, tollgate.Addr, customers[0]); err != nil {
		return fmt.Errorf("memory per stream: %w", err)
	}
	fmt.Fprintln(out, "\nthroughput ratio = tollgate req/s ÷ bare req/s (medians of the rounds); added = tollgate − bare")
	fmt.Fprintln(out, "CPU/req = CPU time of this process (load generator, upstream and proxy) and of redis-server in the measured window, per request")
	for _, line := range split {
		fmt.Fprintln(out, "  "+line)
	}
	return nil
}

// startProfile starts the CPU profile for one tollgate measurement. Go's
// profiler writes one profile per Start/Stop pair, so with several
// measurements the file ends up holding the last one; that is enough to see
// where the time goes.
func startProfile(f *os.File) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	return pprof.StartCPUProfile(f)
}

// The bench customers have credits for every request of the run;
// lowCustomer has 0.000001, less than one request's estimate.
const (
	customer    = "bench-customer"
	lowCustomer = "bench-near-zero"
)

// benchCustomers returns the n customers the clients name: customer
// alone for one, as earlier versions of this command did.
func benchCustomers(n int) []string {
	if n == 1 {
		return []string{customer}
	}
	cs := make([]string, n)
	for i := range cs {
		cs[i] = customer + "-" + strconv.Itoa(i)
	}
	return cs
}

// nearZero measures tollgate alone for lowCustomer, whose every JSON
// request is refused with 402, at each number of clients, and prints its
// table.
func nearZero(out io.Writer, addr string, o options, cpu func() cpuTime) error {
	fmt.Fprintln(out, "\nnear-zero balance (0.000001 credits, below one request's estimate: every request is refused with 402, not forwarded):")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tclients\tproxy\treq/s\tp50\tp99\tCPU/req\tallocs/req\t")
	for _, n := range o.clients {
		var r result
		for range o.rounds {
			m, err := measure(addr, "refused", []string{lowCustomer}, n, o, cpu)
			if err != nil {
				return fmt.Errorf("tollgate near-zero %d clients: %w", n, err)
			}
			r.add(m)
		}
		p50, p99 := r.percentiles()
		fmt.Fprintf(tw, "JSON 402\t%d\ttollgate\t%.0f\t%s\t%s\t%s\t%.0f\t\n", n, r.rate(), ms(p50), ms(p99), us(r.cpuPerRequest()), r.allocsPerRequest())
	}
	return tw.Flush()
}

// tollgateConfig meters the chat route at list prices; the bench customer's
// balance is large enough that nothing is refused. The store timeout is
// raised from 500 ms to 5 s: on a machine shared with other work a Redis
// call can take longer than 500 ms under 32 clients, and the resulting 503
// would end the run rather than show up in p99.
const tollgateConfig = `
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
store: {hold_ttl: 1m, timeout: 5s}
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: UPSTREAM
    headers: {Authorization: "Bearer sk-bench"}
    max_output_tokens: 1024
    prices:
      gpt-4o-mini: {input: "0.15", cached_input: "0.075", output: "0.60"}
`

// bareProxy is the baseline: httputil.ReverseProxy configured as
// tollgate's own (the transport tollgate uses, FlushInterval -1, and a pool
// of 32 KiB copy buffers like tollgate's, so that the comparison measures
// metering rather than buffer reuse: without a pool ReverseProxy allocates
// a fresh buffer per response), nothing else but reading the request body
// before forwarding it. Streaming the inbound body straight through is not
// a usable baseline: the HTTP/1 server closes the inbound body when the
// response headers are written, and the transport's final read of a body
// it has already sent then fails and tears down the upstream connection,
// cutting the response stream (golang/go#40747; seen here as "read error
// during body copy: use of closed network connection" on about one SSE
// stream in a thousand). tollgate reads the body anyway to price it.
func bareProxy(upstream *url.URL) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(upstream) },
		Transport:     proxy.NewTransport(),
		FlushInterval: -1,
		BufferPool:    newBufferPool(),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r)
	})
}

// bufferPool is an httputil.BufferPool of 32 KiB buffers, the size
// ReverseProxy copies with, kept in a channel as tollgate's is.
type bufferPool chan []byte

func newBufferPool() bufferPool { return make(bufferPool, 256) }

func (p bufferPool) Get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, 32<<10)
	}
}

func (p bufferPool) Put(b []byte) {
	select {
	case p <- b:
	default:
	}
}

// openStore returns tollgate's store, a function that reads the CPU time
// its server has used (zero for the embedded store, whose work is done in
// this process), and a function that closes it (and stops the
// redis-server it started).
func openStore(kind string) (ledger.Store, func() time.Duration, func(), error) {
	if kind == "bolt" {
		dir, err := os.MkdirTemp("", "tollgate-bench-")
		if err != nil {
			return nil, nil, nil, err
		}
		st, err := ledger.OpenBolt(filepath.Join(dir, "bench.db"), ledger.Options{})
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, nil, err
		}
		return st, func() time.Duration { return 0 }, func() { st.Close(); os.RemoveAll(dir) }, nil
	}
	srv, err := redistest.Launch()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start redis-server (install it, or use -store bolt): %w", err)
	}
	// The client options tollgate serve uses for a redis:// URL without
	// query parameters (cmd/tollgate/store.go).
	client := redis.NewClient(&redis.Options{
		Addr: srv.Addr, Protocol: 2, MaxRetries: 1, DialerRetries: 1,
	})
	var st ledger.Store
	if kind == "redis-noleases" {
		st = ledger.NewRedisStore(client, ledger.Options{})
	} else {
		st = ledger.NewLeaseStore(client, ledger.Options{}, ledger.LeaseOptions{})
	}
	info := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	cpu := func() time.Duration {
		return redisCPU(info)
	}
	return st, cpu, func() { info.Close(); st.Close(); srv.Close() }, nil
}

// redisCPU returns the CPU time (user and system) redis-server reports
// having used, or zero if it cannot be read.
func redisCPU(c *redis.Client) time.Duration {
	text, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "used_cpu_sys" && k != "used_cpu_user") {
			continue
		}
		if sec, err := strconv.ParseFloat(v, 64); err == nil {
			total += time.Duration(sec * float64(time.Second))
		}
	}
	return total
}

// server is an HTTP server on a free loopback port.
type server struct {
	Addr string
	srv  *http.Server
}

func listen(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{Addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *server) Close() { s.srv.Close() }

// newUpstream answers chat completions the way OpenAI does: a JSON
// completion with usage, or, for "stream": true, an SSE stream flushed
// event by event, ending with the usage chunk (stream_options.include_usage)
// and [DONE].
func newUpstream(events int) http.Handler {
	const id = `"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench"`
	var stream [][]byte
	stream = append(stream, []byte(`data: {`+id+`,"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"))
	for i := range events {
		stream = append(stream, fmt.Appendf(nil, `data: {`+id+`,"choices":[{"index":0,"delta":{"content":" word%d"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n", i))
	}
	stream = append(stream,
		[]byte(`data: {`+id+`,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`+"\n\n"),
		fmt.Appendf(nil, `data: {`+id+`,"choices":[],"usage":{"prompt_tokens":42,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`+"\n\n", events, 42+events),
		[]byte("data: [DONE]\n\n"))
	completion := []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"A wooden boardwalk runs through a green marsh under a blue sky.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":14,"total_tokens":56,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(completion)))
			w.Write(completion)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fl := w.(http.Flusher)
		if r.Header.Get(holdHeader) != "" {
			w.Write(stream[0])
			fl.Flush()
			<-r.Context().Done()
			return
		}
		for _, ev := range stream {
			if _, err := w.Write(ev); err != nil {
				return
			}
			fl.Flush()
		}
	})
}

var requestBodies = map[string][]byte{
	"json": []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You describe images in one sentence."},{"role":"user","content":"Describe a boardwalk through a marsh."}],"max_tokens":256}`),
	"sse":  []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You describe images in one sentence."},{"role":"user","content":"Describe a boardwalk through a marsh."}],"max_tokens":256}`),
}

type target struct {
	name string
	addr string
	res  *result
}

// sample is one measurement: completed requests in a duration, and the
// latency of each.
type sample struct {
	n         int
	elapsed   time.Duration
	cpu       cpuTime // CPU time spent in the measured window
	latencies []time.Duration
}

// result gathers the rounds of one proxy in one case.
type result struct {
	rates     []float64
	latencies []time.Duration
	cpu       cpuTime
	n         int
}

// cpuTime is CPU time used by this process and by the store's server,
// and the heap allocations of this process.
type cpuTime struct {
	process, store time.Duration
	allocs         uint64
	lease          ledger.LeaseStats // with -store redis: what the leases did
}

func (c cpuTime) minus(d cpuTime) cpuTime {
	return cpuTime{process: c.process - d.process, store: c.store - d.store, allocs: c.allocs - d.allocs, lease: addLease(c.lease, d.lease, -1)}
}

// addLease returns a + k·b, field by field.
func addLease(a, b ledger.LeaseStats, k int64) ledger.LeaseStats {
	return ledger.LeaseStats{Lent: a.Lent + k*b.Lent, Reserved: a.Reserved + k*b.Reserved, Syncs: a.Syncs + k*b.Syncs, SyncFailures: a.SyncFailures + k*b.SyncFailures}
}

// heapAllocs returns how many heap objects this process has allocated.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func (r *result) add(s sample) {
	r.rates = append(r.rates, float64(s.n)/s.elapsed.Seconds())
	r.latencies = append(r.latencies, s.latencies...)
	r.cpu.process += s.cpu.process
	r.cpu.store += s.cpu.store
	r.cpu.allocs += s.cpu.allocs
	r.cpu.lease = addLease(r.cpu.lease, s.cpu.lease, 1)
	r.n += s.n
}

// allocsPerRequest is the heap allocations of all rounds divided by their
// requests.
func (r *result) allocsPerRequest() float64 {
	return float64(r.cpu.allocs) / float64(r.n)
}

// cpuPerRequest is the CPU time of all rounds divided by their requests.
// Unlike throughput it does not depend on how much of the machine the
// run got, so it compares well between runs.
func (r *result) cpuPerRequest() time.Duration {
	return (r.cpu.process + r.cpu.store) / time.Duration(r.n)
}

func (r *result) rate() float64 {
	rs := slices.Clone(r.rates)
	slices.Sort(rs)
	return rs[len(rs)/2]
}

func (r *result) percentiles() (p50, p99 time.Duration) {
	slices.Sort(r.latencies)
	at := func(q float64) time.Duration {
		return r.latencies[int(math.Ceil(q*float64(len(r.latencies))))-1]
	}
	return at(0.50), at(0.99)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", msf(d)) }
func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }
func msf(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// measure runs clients concurrent loops of requests against addr, client
// i naming custs[i mod len(custs)], for the warm-up and then the measured
// duration, and reads cpu at the start and the end of the measured
// window. mode is json, sse, or refused (JSON requests that must be
// answered 402).
func measure(addr, mode string, custs []string, clients int, o options, cpu func() cpuTime) (sample, error) {
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: clients,
		DisableCompression:  true, // as an SDK talking to a local sidecar
	}}
	defer client.CloseIdleConnections()
	endpoint := "http://" + addr + "/v1/chat/completions"
	body := requestBodies[mode]
	want := http.StatusOK
	if mode == "refused" {
		body, want = requestBodies["json"], http.StatusPaymentRequired
	}

	var (
		mu      sync.Mutex
		all     []time.Duration
		n       int
		firstEr error
		wg      sync.WaitGroup
	)
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	deadline := measureFrom.Add(o.duration)
	var cpuUsed cpuTime
	wg.Go(func() {
		time.Sleep(time.Until(measureFrom))
		c0 := cpu()
		time.Sleep(time.Until(deadline))
		cpuUsed = cpu().minus(c0)
	})
	for i := range clients {
		cust := custs[i%len(custs)]
		wg.Go(func() {
			var lat []time.Duration
			count := 0
			for {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				d, err := once(client, endpoint, cust, body, mode == "sse", want)
				if err != nil {
					mu.Lock()
					if firstEr == nil {
						firstEr = err
					}
					mu.Unlock()
					return
				}
				if t0.After(measureFrom) && time.Now().Before(deadline) {
					lat = append(lat, d)
					count++
				}
			}
			mu.Lock()
			all = append(all, lat...)
			n += count
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstEr != nil {
		return sample{}, firstEr
	}
	if n == 0 {
		return sample{}, errors.New("no request completed in the measured window; use a longer -duration")
	}
	return sample{n: n, elapsed: o.duration, cpu: cpuUsed, latencies: all}, nil
}

// once sends one request of cust and returns its latency: until the
// body's end for JSON, until its first byte for SSE (then it drains the
// stream). A status other than want is an error.
func once(c *http.Client, endpoint, cust string, body []byte, sse bool, want int) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-app")
	req.Header.Set("X-Tollgate-Customer", cust)
	t0 := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return 0, fmt.Errorf("status %d: %s", res.StatusCode, b)
	}
	var first [1]byte
	if _, err := io.ReadFull(res.Body, first[:]); err != nil {
		return 0, err
	}
	ttfb := time.Since(t0)
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0, err
	}
	if sse {
		return ttfb, nil
	}
	return time.Since(t0), nil
}
