package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/proxy"
)

// BenchmarkProxy compares tollgate with a bare httputil.ReverseProxy
// (configured like tollgate's own: same transport, FlushInterval -1, and
// a pool of copy buffers, without which it would allocate 32 KiB per
// response) in front of the same fake upstream, for one JSON chat
// completion and one SSE chat stream (13 events), with one client and with
// 32 concurrent clients. Throughput ratio = bare ns/op ÷ tollgate ns/op of the same
// run; allocs/op count the client, the proxy and the upstream together,
// so tollgate's own allocations are the difference from "bare".
//
//	go test ./proxy -run '^$' -bench Proxy -benchtime 2s
//
// The tollgate cases hold credits in Redis (when redis-server is
// installed; also with plans configured, "tollgate-redis-plans") and in
// the embedded bolt file (holds in memory, settlements group-committed).
func BenchmarkProxy(b *testing.B) {
	jsonBody := testdata(b, "chat_completion.json")
	sseBody := testdata(b, "chat_stream.sse")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"stream":true`) {
			writeSSE(w, sseBody, 0)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(jsonBody)
	}))
	defer up.Close()
	upURL, _ := url.Parse(up.URL)
	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(upURL) },
		Transport:     proxy.NewTransport(),
		FlushInterval: -1,
		BufferPool:    proxy.NewBufferPool(),
	})
	defer bare.Close()

	type target struct {
		name  string
		url   string
		store ledger.Store
	}
	targets := []target{{name: "bare", url: bare.URL}}
	add := func(name string, st ledger.Store, yaml string) {
		set := parseSettings(b, yaml, up.URL)
		srv, err := proxy.New(set, st, proxy.Options{Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		b.Cleanup(func() {
			ts.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Drain(ctx)
		})
		targets = append(targets, target{name: name, url: ts.URL, store: st})
	}
	if sharedRedis != nil {
		add("tollgate-redis", redisStore(b), testConfig)
		// With plans: every request is allowed and priced by the
		// customer's plan (an override to pro), checked in the same
		// script as the reservation.
		add("tollgate-redis-plans", redisStore(b), planConfig)
	}
	add("tollgate-bolt", boltStore(b), testConfig)

	cust := newCustomer()
	for _, t := range targets[1:] {
		if strings.HasSuffix(t.name, "-plans") {
			if _, err := t.store.PutOverride(context.Background(), cust, `{"plan":"pro","set_at":"2025-01-01T00:00:00Z"}`); err != nil {
				b.Fatal(err)
			}
		}
		_, err := t.store.Credit(context.Background(), ledger.Credit{
			Customer: cust, Amount: mustMicros(b, "1000000000"), Kind: ledger.KindGrant, Key: "bench-" + t.name,
		})
		if err != nil {
			b.Fatal(err)
		}
	}

	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	send := func(b *testing.B, base, body string, want int) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tollgate-Customer", cust)
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || int(n) != want {
			b.Fatalf("status %d, %d bytes, want 200 and %d", res.StatusCode, n, want)
		}
	}
	cases := []struct {
		name string
		body string
		want int
	}{
		{"json", chatBody("gpt-4o", ""), len(jsonBody)},
		{"sse", chatBody("gpt-4o", `,"stream":true,"stream_options":{"include_usage":true}`), len(sseBody)},
	}
	for _, c := range cases {
		for _, t := range targets {
			b.Run(c.name+"/"+t.name+"/clients=1", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					send(b, t.url, c.body, c.want)
				}
			})
			b.Run(c.name+"/"+t.name+"/clients=32", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(32 / max(1, runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						send(b, t.url, c.body, c.want)
					}
				})
			})
		}
	}
}
