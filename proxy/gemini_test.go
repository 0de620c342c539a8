package proxy_test

import (
	"bytes"
	"strings"
	"testing"
)

// geminiBody is a small generateContent request.
func geminiBody(_, extra string) string {
	return `{"contents":[{"role":"user","parts":[{"text":"Why is the sky blue?"}]}]` + extra + `}`
}

// TestGeminiRoute: a google.gemini route prices the model its path names,
// charges Gemini's usageMetadata exactly (thoughts as output, cached
// content at the cached rate) for the JSON answer and for both streams,
// forwards every streamed byte untouched, sends the route's
// x-goog-api-key and never the client's key (header or ?key=), and
// enforces the output ceiling in generationConfig.maxOutputTokens.
func TestGeminiRoute(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name, query, file string
		in, cached, out   int64
		cost              string
	}{
		// 266 × 0.30 + 1,024 × 0.03 + (161 + 786) × 2.50 per 1M = 0.00247802.
		{"generateContent", "", "gemini_generate.json", 1290, 1024, 947, "0.002479"},
		// 31 × 0.30 + (63 + 412) × 2.50 per 1M = 0.0011968.
		{"streamGenerateContent alt=sse", "?key=client-key&alt=sse&%6Bey=client-key", "gemini_stream.sse", 31, 0, 475, "0.001197"},
		{"streamGenerateContent array", "?%6B%65y=AIza-client", "gemini_stream_array.json", 31, 0, 475, "0.001197"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cust := newCustomer()
			h.grant(cust, "1")
			method := "generateContent"
			if tc.file != "gemini_generate.json" {
				method = "streamGenerateContent"
			}
			res, data := h.do(request{path: "/v1beta/models/gemini-2.5-flash:" + method + tc.query, customer: cust, body: geminiBody("", ""),
				header: map[string]string{"x-goog-api-key": "client-key"}})
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, data)
			}
			if !bytes.Equal(data, testdata(t, tc.file)) {
				t.Errorf("the client got %d bytes that differ from the upstream's", len(data))
			}
			up := h.up.last(t)
			if got := up.Header.Values("X-Goog-Api-Key"); len(got) != 1 || got[0] != geminiKey {
				t.Errorf("upstream x-goog-api-key %q, want the route's", got)
			}
			if up.Header.Get("Authorization") != "" {
				t.Error("the client's Authorization reached the upstream")
			}
			wantQuery := ""
			if strings.Contains(tc.query, "alt=sse") {
				wantQuery = "alt=sse"
			}
			if up.RawQuery != wantQuery {
				t.Errorf("upstream query %q, want %q", up.RawQuery, wantQuery)
			}
			if got := string(up.Body); got != geminiBody("", `,"generationConfig":{"maxOutputTokens":1000}`) {
				t.Errorf("upstream body %s", got)
			}
			if got := res.Header.Get("X-Tollgate-Output-Cap"); got != "1000" {
				t.Errorf("X-Tollgate-Output-Cap %q", got)
			}
			c := h.settled(cust, 1)[0]
			if c.Model != "gemini-2.5-flash" || c.InputTokens != tc.in || c.CachedInputTokens != tc.cached || c.OutputTokens != tc.out {
				t.Errorf("charge %+v", c)
			}
			if got := (-c.Amount).String(); got != tc.cost {
				t.Errorf("charged %s, want %s", got, tc.cost)
			}
		})
	}

	t.Run("other methods are not metered", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "1")
		n := len(h.up.requests())
		res, data := h.do(request{path: "/v1beta/models/gemini-2.5-flash:countTokens", customer: cust, body: geminiBody("", "")})
		e := decodeGoogleError(t, data)
		if res.StatusCode != 404 || e.Error.Code != 404 || e.Error.Status != "NOT_FOUND" || e.Error.Details[0].Reason != "route_not_found" {
			t.Errorf("status %d: %s", res.StatusCode, data)
		}
		if len(h.up.requests()) != n {
			t.Error("forwarded")
		}
	})
}
