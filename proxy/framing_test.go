package proxy_test

import (
	"bytes"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/tollgate-dev/tollgate/ledger"
)

// TestMislabelledStreams: an upstream (a gateway in between, a
// misconfigured provider) that labels its SSE stream application/json or
// text/plain is metered by what its bytes are. Labelled application/json,
// such a stream was charged its input only; labelled text/plain, 22 times
// too much. The charge and the client's bytes (the usage chunk removed
// when the client did not ask for it) equal the correctly labelled case.
func TestMislabelledStreams(t *testing.T) {
	tests := []struct {
		name, path, body string
	}{
		{"chat stream, usage not asked", "/v1/chat/completions", chatBody("gpt-4o", `,"stream":true`)},
		{"chat stream, usage asked", "/v1/chat/completions", chatBody("gpt-4o", `,"stream":true,"stream_options":{"include_usage":true}`)},
		{"anthropic stream", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello, Claude"}]}`},
		{"responses stream", "/v1/responses",
			`{"model":"gpt-4.1","stream":true,"input":"Tell me a story.","max_output_tokens":2000}`},
	}
	streams := map[string]string{"/v1/chat/completions": "chat_stream.sse", "/v1/messages": "anthropic_stream.sse", "/v1/responses": "responses_stream.sse"}
	h := newHarness(t, harnessOptions{})
	var label atomic.Value // the Content-Type the upstream puts on its stream
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		data := testdata(t, streams[r.URL.Path])
		w.Header().Set("Content-Type", label.Load().(string))
		fl := w.(http.Flusher)
		w.WriteHeader(http.StatusOK)
		for len(data) > 0 {
			n := bytes.Index(data, []byte("\n\n")) + 2
			if n < 2 {
				n = len(data)
			}
			w.Write(data[:n])
			fl.Flush()
			data = data[n:]
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := func(ct string) ([]byte, ledger.Entry) {
				label.Store(ct)
				cust := newCustomer()
				h.grant(cust, "10")
				res, data := h.do(request{path: tc.path, customer: cust, body: tc.body})
				if res.StatusCode != 200 {
					t.Fatalf("%s: status %d: %s", ct, res.StatusCode, data)
				}
				if got := res.Header.Get("Content-Type"); got != ct {
					t.Fatalf("Content-Type %q reached the client, want the upstream's %q", got, ct)
				}
				return data, h.settled(cust, 1)[0]
			}
			wantData, want := run("text/event-stream")
			if want.OutputTokens == 0 || want.InputTokens == 0 {
				t.Fatalf("correctly labelled: charge %+v", want)
			}
			for _, ct := range []string{"application/json", "text/plain; charset=utf-8"} {
				data, got := run(ct)
				if got.Amount != want.Amount || got.InputTokens != want.InputTokens || got.CachedInputTokens != want.CachedInputTokens ||
					got.OutputTokens != want.OutputTokens {
					t.Errorf("labelled %s: charged %s (in %d, cached %d, out %d), want %s (in %d, cached %d, out %d)", ct,
						-got.Amount, got.InputTokens, got.CachedInputTokens, got.OutputTokens,
						-want.Amount, want.InputTokens, want.CachedInputTokens, want.OutputTokens)
				}
				if !bytes.Equal(data, wantData) {
					t.Errorf("labelled %s: the client got %d bytes, want the %d of the correctly labelled stream", ct, len(data), len(wantData))
				}
			}
		})
	}
}
