package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"time"
)

// holdHeader makes the bench upstream send a stream's first event and then
// hold the stream open until the client goes away: the open streams
// streamMemory counts.
const holdHeader = "X-Bench-Hold"

// openStreams is how many SSE streams streamMemory holds open at once.
const openStreams = 500

// streamMemory prints the memory an open SSE stream costs through each
// proxy: the heap and stacks this process has in use (after a GC) with
// openStreams streams open, less what it had before, per stream. The
// load generator's and the upstream's share is the same for both proxies,
// so the difference is what tollgate adds to a stream.
func streamMemory(out io.Writer, bareAddr, tollgateAddr, cust string) error {
	fmt.Fprintf(out, "\nmemory per open SSE stream (%d held open at once; heap and stacks in use of this process, which also runs the client and the upstream):\n", openStreams)
	// Twice each, alternating, keeping the smaller: the first streams of a
	// process also pay for pools and maps that grow once.
	var bare, tg float64
	idle := runtime.NumGoroutine()
	for r := range 4 {
		// The previous round's streams must be gone, on both ends.
		for wait := 0; runtime.NumGoroutine() > idle+8 && wait < 100; wait++ {
			time.Sleep(50 * time.Millisecond)
		}
		addr, dst := bareAddr, &bare
		if r%2 == 1 {
			addr, dst = tollgateAddr, &tg
		}
		m, err := holdStreams(addr, cust)
		if err != nil {
			return err
		}
		if r < 2 || m < *dst {
			*dst = m
		}
	}
	fmt.Fprintf(out, "  bare %.1f KiB, tollgate %.1f KiB: %+.1f KiB per stream\n", bare/1024, tg/1024, (tg-bare)/1024)
	return nil
}

// holdStreams opens openStreams streams of cust through addr, each read
// to its first event, and returns the bytes in use per open stream.
func holdStreams(addr, cust string) (float64, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: openStreams, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := inUse()
	var bodies []io.ReadCloser
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	for range openStreams {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions", bytes.NewReader(requestBodies["sse"]))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-app")
		req.Header.Set("X-Tollgate-Customer", cust)
		req.Header.Set(holdHeader, "1")
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		bodies = append(bodies, res.Body)
		if res.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", res.StatusCode)
		}
		// The first event, which the proxy has relayed by now.
		if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
			return 0, err
		}
	}
	return float64(inUse()-before) / openStreams, nil
}

// inUse returns the heap and stack bytes in use after two collections:
// a sync.Pool (tollgate keeps its Taps in one) survives the first, and
// what it holds would otherwise count in one measurement and not the next.
func inUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
