package proxy_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStreamIsNotBuffered: each event reaches the client while the
// upstream is still writing the next.
func TestStreamIsNotBuffered(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	release := make(chan struct{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}\n\ndata: [DONE]\n\n")
	})
	cust := newCustomer()
	h.grant(cust, "10")
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", `,"stream":true`)))
	req.Header.Set("X-Tollgate-Customer", cust)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make([]byte, 256)
	n, err := res.Body.Read(first)
	if err != nil || !strings.Contains(string(first[:n]), `"Hel"`) {
		t.Fatalf("first event: %q %v", first[:n], err)
	}
	close(release)
	rest, _ := io.ReadAll(res.Body)
	if want := "data: [DONE]\n\n"; string(rest) != want {
		t.Errorf("rest %q, want %q (the usage chunk removed)", rest, want)
	}
	c := h.settled(cust, 1)[0]
	if c.InputTokens != 10 || c.OutputTokens != 2 {
		t.Errorf("charge %+v", c)
	}
}

// TestCompressedUpstream: a provider that gzips its answers is decoded
// before the meter, so usage is read exactly and the client gets plain
// JSON.
func TestCompressedUpstream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			recorded(t, w, r, body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(testdata(t, "chat_completion.json"))
		zw.Close()
	})
	cust := newCustomer()
	h.grant(cust, "10")
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", "")))
	req.Header.Set("X-Tollgate-Customer", cust)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.Header.Get("Content-Encoding") != "" || !bytes.Equal(data, testdata(t, "chat_completion.json")) {
		t.Errorf("client got Content-Encoding %q and %d bytes", res.Header.Get("Content-Encoding"), len(data))
	}
	if c := h.settled(cust, 1)[0]; c.Amount != -mustMicros(t, "0.003253") {
		t.Errorf("charge %s", -c.Amount)
	}
}

// TestClientDisconnectMidStream: a client that goes away mid-stream
// cancels the upstream request and is charged, within 2 s, for what was
// produced.
func TestClientDisconnectMidStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cancelled := make(chan time.Time, 1)
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"Once", " upon", " a", " time"} {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		cancelled <- time.Now()
	})
	cust := newCustomer()
	h.grant(cust, "10")
	ctx, cancel := context.WithCancel(context.Background())
	req := h.chatRequest(ctx, cust, `,"stream":true`)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := io.ReadAtLeast(res.Body, buf, 10); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	cancel()
	res.Body.Close()

	select {
	case at := <-cancelled:
		if d := at.Sub(gone); d > 2*time.Second {
			t.Errorf("upstream cancelled %s after the client left", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream request was not cancelled within 2s of the client leaving")
	}
	c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
	// No usage arrived: input from the request estimate, output from the
	// 4 streamed text values ("Once upon a time": 16 bytes, 4 values).
	if c.OutputTokens != 4 || c.InputTokens == 0 || c.Amount >= 0 {
		t.Errorf("charge %+v", c)
	}
	h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}, 1)
	h.eventually("tollgate_open_streams", nil, 0)
}

// TestUpstreamCutMidStream: a provider that drops the connection mid-stream
// still costs what it produced, and the client sees the stream end in an
// error rather than a clean end.
func TestUpstreamCutMidStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}]}\n\n")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	cust := newCustomer()
	h.grant(cust, "10")
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", `,"stream":true`)))
	req.Header.Set("X-Tollgate-Customer", cust)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Error("the client saw a clean end of a stream the upstream cut")
	}
	c := h.settled(cust, 1)[0]
	if c.OutputTokens != 3 || c.Amount >= 0 { // "Hello there": 11 bytes → 3 tokens
		t.Errorf("charge %+v", c)
	}
}

// TestClientGoneBeforeUsageChunk: a client that leaves right after the
// last content it wanted is still charged the usage chunk that follows,
// reasoning tokens included, because the upstream request outlives the
// client by clientGoneGrace.
func TestClientGoneBeforeUsageChunk(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"Forty", "-two"} {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
		}
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond) // the client leaves meanwhile
		fmt.Fprint(w, `data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":1502,"total_tokens":1522,"completion_tokens_details":{"reasoning_tokens":1500}}}`+"\n\ndata: [DONE]\n\n")
		w.(http.Flusher).Flush()
	})
	cust := newCustomer()
	h.grant(cust, "10")
	ctx, cancel := context.WithCancel(context.Background())
	req := h.chatRequest(ctx, cust, `,"stream":true`)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var seen []byte
	buf := make([]byte, 256)
	for !strings.Contains(string(seen), "finish_reason") {
		n, err := res.Body.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			t.Fatalf("stream ended before finish_reason: %v", err)
		}
	}
	cancel()
	res.Body.Close()

	c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
	// gpt-4o: 20 input × 2.50 + 1502 output × 10 per 1M = 0.015070.
	if c.InputTokens != 20 || c.OutputTokens != 1502 || c.Amount != -mustMicros(t, "0.015070") {
		t.Errorf("charge %+v, want the upstream's usage: 20 input, 1502 output, -0.015070", c)
	}
	if got := h.metric("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}); got != 0 {
		t.Errorf("tollgate_usage_estimated_total = %v, want 0: the usage arrived", got)
	}
}

// TestClientGoneWhileUpstreamStreams: when the client leaves while the
// provider keeps sending, writing to the client fails and the rest of the
// body is read in the background for at most clientGoneGrace: a usage
// chunk that arrives meanwhile is charged exactly; a provider that stops
// sending without one is cancelled and the stream charged its estimate,
// all within DESIGN's 2 s.
func TestClientGoneWhileUpstreamStreams(t *testing.T) {
	tests := []struct {
		name  string
		usage bool // the provider ends with the usage chunk 300ms after the client left
	}{
		{"usage arrives after the client left", true},
		{"provider hangs after the client left", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			left := make(chan time.Time, 1)
			cancelled := make(chan time.Time, 1)
			h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fl := w.(http.Flusher)
				word := func() {
					io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n")
					fl.Flush()
				}
				word()
				var stop <-chan time.Time
				for {
					select {
					case at := <-left:
						if tc.usage {
							stop = time.After(300*time.Millisecond - time.Since(at))
						} else {
							stop = time.After(100 * time.Millisecond)
						}
					case <-stop:
						if tc.usage {
							io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":700,"total_tokens":720}}`+"\n\ndata: [DONE]\n\n")
							return
						}
						<-r.Context().Done()
						cancelled <- time.Now()
						return
					case <-r.Context().Done():
						cancelled <- time.Now()
						return
					case <-time.After(2 * time.Millisecond):
						word()
					}
				}
			})
			cust := newCustomer()
			h.grant(cust, "10")
			ctx, cancel := context.WithCancel(context.Background())
			req := h.chatRequest(ctx, cust, `,"stream":true`)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAtLeast(res.Body, make([]byte, 64), 10); err != nil {
				t.Fatal(err)
			}
			gone := time.Now()
			cancel()
			res.Body.Close()
			left <- gone

			c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
			if d := time.Since(gone); d > 2*time.Second {
				t.Errorf("settled %s after the client left", d)
			}
			if tc.usage {
				// 20 input × 2.50 + 700 output × 10 per 1M.
				if c.InputTokens != 20 || c.OutputTokens != 700 || c.Amount != -mustMicros(t, "0.007050") {
					t.Errorf("charge %+v, want the provider's usage", c)
				}
			} else {
				select {
				case at := <-cancelled:
					if d := at.Sub(gone); d > 2*time.Second {
						t.Errorf("the upstream request was cancelled %s after the client left", d)
					}
				case <-time.After(2 * time.Second):
					t.Fatal("the upstream request was not cancelled")
				}
				if c.OutputTokens == 0 || c.InputTokens == 0 || c.Amount >= 0 {
					t.Errorf("charge %+v, want the estimate of what was streamed", c)
				}
				h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}, 1)
			}
			h.eventually("tollgate_open_streams", nil, 0)
			h.eventually("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "499"}, 1)
			dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
			defer dcancel()
			if err := h.srv.Drain(dctx); err != nil {
				t.Errorf("drain after the stream settled: %v", err)
			}
		})
	}
}

// TestUnreadableEncoding: an answer compressed in an encoding the meter
// cannot read (tollgate asked for identity) reaches the client untouched
// and is charged its reservation, the most the customer agreed to pay.
func TestUnreadableEncoding(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	compressed := []byte("\x1b\x2e\x00\xf8\x8d\xd4\x6d\x2b\x05not-really-brotli")
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "br")
		w.Write(compressed)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	body := chatBody("gpt-4o", `,"max_tokens":300`)
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body})
	if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != "br" || !bytes.Equal(data, compressed) {
		t.Fatalf("%d Content-Encoding %q, %q", res.StatusCode, res.Header.Get("Content-Encoding"), data)
	}
	reserved := reservation(body, 300)
	if got := res.Header.Get("X-Tollgate-Reserved"); got != reserved.String() {
		t.Errorf("X-Tollgate-Reserved %s, want %s", got, reserved)
	}
	if c := h.settled(cust, 1)[0]; c.Amount != -reserved {
		t.Errorf("charged %s, want the reservation %s", -c.Amount, reserved)
	}
	h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}, 1)
	h.eventually("tollgate_open_streams", nil, 0)
}

// TestLargeEventFiltered: with the usage chunk filtered out, an event
// larger than one copy buffer, arriving in pieces, is held until it ends
// and then reaches the client whole and unchanged.
func TestLargeEventFiltered(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	big := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("abcdefgh", 6000) + "\"}}]}\n\n"
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":12000,\"total_tokens\":12010}}\n\n"
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		stream := big + usage + "data: [DONE]\n\n"
		for len(stream) > 0 {
			n := min(4096, len(stream))
			io.WriteString(w, stream[:n])
			fl.Flush()
			stream = stream[n:]
		}
	})
	cust := newCustomer()
	h.grant(cust, "10")
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", `,"stream":true,"max_tokens":1000`)})
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	if want := big + "data: [DONE]\n\n"; string(data) != want {
		t.Errorf("the client got %d bytes, want %d (the stream without the usage chunk)", len(data), len(want))
	}
	if c := h.settled(cust, 1)[0]; c.InputTokens != 10 || c.OutputTokens != 12000 {
		t.Errorf("charge %+v", c)
	}
}
