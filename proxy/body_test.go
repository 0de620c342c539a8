package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// bodyTimeout is request_body_timeout in these tests: short, so that the
// tests are quick, and long against the pauses of a moving upload.
const bodyTimeout = 500 * time.Millisecond

// reserveCounter is a real store that counts Reserve calls.
type reserveCounter struct {
	ledger.Store
	n atomic.Int64
}

func (s *reserveCounter) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	s.n.Add(1)
	return s.Store.ReserveAvailable(ctx, customer, holdID, amount, ttl)
}

func bodyTimeoutHarness(t *testing.T) (*harness, *reserveCounter) {
	t.Helper()
	st := &reserveCounter{Store: boltStore(t)}
	h := newHarness(t, harnessOptions{store: st, yaml: "request_body_timeout: " + bodyTimeout.String() + "\n" + testConfig})
	return h, st
}

const stalledMessage = "the request body stopped arriving: no bytes for 500ms (request_body_timeout), so tollgate gave up on it; nothing was forwarded or charged. Send the whole body without pausing, or raise request_body_timeout"

// TestStalledBody: a client that sends the headers and half the body, then
// nothing, is answered 408 request_timeout once request_body_timeout has
// passed without a byte, and disconnected; no hold is ever taken, since
// the body is read before reserving. Over a real listener (and HTTP/2),
// because the deadline is the connection's.
func TestStalledBody(t *testing.T) {
	h, st := bodyTimeoutHarness(t)
	cust := newCustomer()
	h.grant(cust, "10")
	body := chatBody("gpt-4o", "")
	half := body[:len(body)/2]

	tests := []struct {
		name string
		head string // the request up to and including the blank line
		sent string // what follows before the stall
	}{
		{
			name: "content-length",
			head: fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\nX-Tollgate-Customer: %s\r\nContent-Length: %d\r\n\r\n", cust, len(body)),
			sent: half,
		},
		{
			name: "chunked",
			head: fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\nX-Tollgate-Customer: %s\r\nTransfer-Encoding: chunked\r\n\r\n", cust),
			sent: fmt.Sprintf("%x\r\n%s\r\n", len(half), half),
		},
		{
			name: "nothing after the headers",
			head: fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\nX-Tollgate-Customer: %s\r\nContent-Length: %d\r\n\r\n", cust, len(body)),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", h.proxy.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.head+tc.sent); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			conn.SetReadDeadline(start.Add(bodyTimeout + 5*time.Second))
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			elapsed := time.Since(start)
			data, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("status %d, want 408: %s", res.StatusCode, data)
			}
			e := decodeError(t, data)
			if e.Error.Code != "request_timeout" || e.Error.Type != "invalid_request_error" || e.Error.Message != stalledMessage {
				t.Errorf("error %+v\nwant code request_timeout, message %s", e.Error, stalledMessage)
			}
			if elapsed < bodyTimeout || elapsed > bodyTimeout+2*time.Second {
				t.Errorf("answered after %s, want request_body_timeout (%s) after the last byte", elapsed, bodyTimeout)
			}
			if !res.Close {
				t.Error("the 408 does not say Connection: close")
			}
			// The server hangs up: the rest of the body will never be read.
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("after the 408: read %d bytes, %v; want the connection closed (EOF)", n, err)
			}
		})
	}

	t.Run("http2", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(h.srv)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), bodyTimeout+5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", pr)
		req.ContentLength = int64(len(body))
		req.Header.Set("X-Tollgate-Customer", cust)
		go io.WriteString(pw, half) // then nothing
		start := time.Now()
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("protocol %s, want HTTP/2", res.Proto)
		}
		if res.StatusCode != http.StatusRequestTimeout || decodeError(t, data).Error.Code != "request_timeout" {
			t.Fatalf("%d %s", res.StatusCode, data)
		}
		if elapsed < bodyTimeout || elapsed > bodyTimeout+2*time.Second {
			t.Errorf("answered after %s, want about %s", elapsed, bodyTimeout)
		}
		// Other streams of the connection are unaffected.
		req2, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(body))
		req2.Header.Set("X-Tollgate-Customer", cust)
		res2, err := srv.Client().Do(req2)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res2.Body)
		res2.Body.Close()
		if res2.StatusCode != 200 {
			t.Errorf("next request on the connection: %d", res2.StatusCode)
		}
		if n := st.n.Load(); n != 1 {
			t.Errorf("%d reservations, want 1 (the complete request only)", n)
		}
		h.settled(cust, 1)
		st.n.Store(0)
	})

	if n := st.n.Load(); n != 0 {
		t.Errorf("%d reservations for stalled bodies, want none", n)
	}
	if n := len(h.up.requests()); n != 1 {
		t.Errorf("the upstream received %d requests, want 1 (the complete HTTP/2 one)", n)
	}
	if got := h.metric("tollgate_refusals_total", map[string]string{"code": "request_timeout"}); got != 4 {
		t.Errorf("tollgate_refusals_total{code=request_timeout} = %v, want 4", got)
	}
	if a := h.account(cust); a.Reserved != 0 {
		t.Errorf("%s reserved", a.Reserved)
	}
}

// slowReader yields its data in pieces, pausing before each: an upload
// that keeps moving but takes longer in all than request_body_timeout.
type slowReader struct {
	data  string
	piece int
	pause time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	n := copy(p, r.data[:min(r.piece, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// TestSlowBodyIsNotCut: request_body_timeout bounds the pause between
// bytes, not the whole upload: a body that takes twice the timeout to
// arrive, but never pauses long, is forwarded and charged.
func TestSlowBodyIsNotCut(t *testing.T) {
	h, _ := bodyTimeoutHarness(t)
	cust := newCustomer()
	h.grant(cust, "10")
	// A cap within the route's, so that the body is forwarded unchanged.
	body := chatBody("gpt-4o", `,"max_completion_tokens":100,"user":"`+strings.Repeat("x", 200)+`"`)
	pause := bodyTimeout / 10
	piece := len(body)/20 + 1 // about 20 pieces: 2 × request_body_timeout in all
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%t", chunked), func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", &slowReader{data: body, piece: piece, pause: pause})
			req.ContentLength = int64(len(body))
			if chunked {
				req.ContentLength = -1
			}
			req.Header.Set("X-Tollgate-Customer", cust)
			start := time.Now()
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("%d %s", res.StatusCode, data)
			}
			if d := time.Since(start); d < bodyTimeout+bodyTimeout/2 {
				t.Fatalf("the upload took %s; the test needs it to outlast request_body_timeout (%s)", d, bodyTimeout)
			}
			if got := string(h.up.last(t).Body); got != body {
				t.Errorf("the upstream received %d bytes, want the whole %d", len(got), len(body))
			}
		})
	}
	h.settled(cust, 2)
}
