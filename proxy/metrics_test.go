package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/usage"
)

// countSeries is where a settlement counts the ledger class name (a
// usage.Tokens.TokenCounts name), as the README's metrics table says: a
// tool's calls in tollgate_tool_calls_total by tool, every other class in
// tollgate_tokens_total by its name without "_tokens".
func countSeries(name string) (metric string, labels map[string]string) {
	if tool, ok := strings.CutSuffix(name, "_calls"); ok {
		return "tollgate_tool_calls_total", map[string]string{"tool": tool}
	}
	return "tollgate_tokens_total", map[string]string{"class": strings.TrimSuffix(name, "_tokens")}
}

// classNames are the ledger's classes, in TokenCounts order.
func classNames() []string {
	var names []string
	for name := range (usage.Tokens{}).TokenCounts() {
		names = append(names, name)
	}
	return names
}

// Responses of each API that together report every class the ledger
// records, each in the provider's fields.
const (
	// 500 prompt tokens: 100 cached, 40 audio, 30 image; 60 completion
	// tokens, 20 of them audio.
	everyClassChat = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":60,` +
		`"total_tokens":560,"prompt_tokens_details":{"cached_tokens":100,"audio_tokens":40,"image_tokens":30},` +
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":20}},"service_tier":"default"}`
	// 1,000 uncached input, 2,000 read, 300 written for 5 minutes and 200
	// for an hour: 3,500 input; 2 searches, 1 fetch, a container.
	everyClassMessages = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Done."}],` +
		`"stop_reason":"end_turn","stop_sequence":null,"container":{"id":"container_1","expires_at":"2025-06-01T12:05:00Z"},` +
		`"usage":{"input_tokens":1000,"cache_creation_input_tokens":500,"cache_read_input_tokens":2000,` +
		`"cache_creation":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":200},"output_tokens":70,` +
		`"server_tool_use":{"web_search_requests":2,"web_fetch_requests":1},"service_tier":"standard"}}`
	// A file search, a code interpreter container and an image generation.
	everyClassResponses = `{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4.1","output":[` +
		`{"id":"fs_1","type":"file_search_call","status":"completed","queries":["q"],"results":null},` +
		`{"id":"ci_1","type":"code_interpreter_call","status":"completed","code":"print(1)","container_id":"cntr_1","outputs":null},` +
		`{"id":"ig_1","type":"image_generation_call","status":"completed","result":"iVBORw0KGgo="},` +
		`{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Done.","annotations":[]}]}],` +
		`"usage":{"input_tokens":800,"input_tokens_details":{"cached_tokens":0},"output_tokens":90,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":890},` +
		`"service_tier":"default"}`
	// 20 text and 100 image input tokens; 272 image output tokens.
	everyClassImages = `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}],"size":"1024x1024","quality":"low",` +
		`"usage":{"input_tokens":120,"input_tokens_details":{"image_tokens":100,"text_tokens":20},"output_tokens":272,"total_tokens":392}}`
)

// TestTokenMetricsEveryClass checks tollgate_tokens_total and
// tollgate_tool_calls_total: every class of the ledger has a series at
// zero on every route before the first request, and a settlement adds
// to each exactly what its ledger entry records. The responses report
// every class between them, so a class added to usage.Tokens fails here
// until a response reports it.
func TestTokenMetricsEveryClass(t *testing.T) {
	images := "  - path: /v1/images/generations\n    api: openai.images\n    upstream: UPSTREAM\n    prices:\n" +
		"      gpt-image-1: {input: \"5\", image_input: \"10\", output: \"40\"}\n"
	h := newHarness(t, harnessOptions{yaml: configWith(t, "  - path: /v1/models\n", images+"  - path: /v1/models\n")})
	routes := []string{"/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings", "/v1/images/generations", "/v1/models", "/dead/v1/chat/completions"}

	// From the start: a series at zero for every class on every route.
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, route := range routes {
		for _, name := range classNames() {
			metric, labels := countSeries(name)
			labels["route"] = route
			if v, ok := series(mfs, metric, labels); !ok || v != 0 {
				t.Errorf("a fresh server's %s%v: %v, present %v; want a series at 0", metric, labels, v, ok)
			}
		}
	}

	answers := map[string]string{
		"/v1/chat/completions":   everyClassChat,
		"/v1/messages":           everyClassMessages,
		"/v1/responses":          everyClassResponses,
		"/v1/images/generations": everyClassImages,
	}
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(answers[r.URL.Path]))
	})
	cust := newCustomer()
	h.grant(cust, "100")
	for path, body := range map[string]string{
		"/v1/chat/completions":   chatBody("gpt-4o", ""),
		"/v1/messages":           `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`,
		"/v1/responses":          `{"model":"gpt-4.1","input":"Hi"}`,
		"/v1/images/generations": `{"model":"gpt-image-1","prompt":"a fox","size":"1024x1024","quality":"low"}`,
	} {
		if res, data := h.do(request{path: path, customer: cust, body: body}); res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, res.StatusCode, data)
		}
	}

	reported := map[string]bool{}
	want := map[string]map[string]int64{} // route → class → count
	for _, e := range h.settled(cust, len(answers)) {
		if e.Kind != ledger.KindCharge {
			continue
		}
		if want[e.Route] == nil {
			want[e.Route] = map[string]int64{}
		}
		for name, n := range e.Tokens.TokenCounts() {
			want[e.Route][name] += n
			reported[name] = reported[name] || n > 0
		}
	}
	for _, name := range classNames() {
		if !reported[name] {
			t.Errorf("no response reported %s: add it to one, so that its metric is tested", name)
		}
	}
	for route, counts := range want {
		for name, n := range counts {
			metric, labels := countSeries(name)
			labels["route"] = route
			h.eventually(metric, labels, float64(n))
		}
	}
}

// series returns the value of the counter of metric whose labels are
// exactly labels, and whether there is one.
func series(mfs []*dto.MetricFamily, metric string, labels map[string]string) (float64, bool) {
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}
