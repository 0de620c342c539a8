package meter

import (
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tollgate-dev/tollgate/usage"
)

// sameUsage reports whether a and b are the same usage, iterations
// compared by value.
func sameUsage(a, b Usage) bool { return reflect.DeepEqual(a, b) }

func usageOf(t *testing.T, req Request, ct string, body string) Usage {
	t.Helper()
	tap := NewTap(req, ct)
	r := iotest.OneByteReader(strings.NewReader(body))
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		tap.Feed(buf[:n])
		if err != nil {
			break
		}
	}
	_, u := tap.End()
	return u
}

func TestAbsentIsNotZero(t *testing.T) {
	req := chatReq(t, true)
	zero := usageOf(t, req, "text/event-stream", contentEvent+"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0}}\n\n"+doneEvent)
	if !sameUsage(zero, Usage{}) {
		t.Errorf("reported zero usage: %+v, want all zero and not estimated", zero)
	}
	absent := usageOf(t, req, "text/event-stream", contentEvent+doneEvent)
	if !absent.Estimated || absent.OutputTokens != 1 || absent.InputTokens != req.estInput || req.estInput == 0 {
		t.Errorf("absent usage: %+v, want estimated input %d and 1 output token", absent, req.estInput)
	}
	// A null usage is absent, not zero.
	null := usageOf(t, req, "text/event-stream", "data: {\"choices\":[],\"usage\":null}\n\n")
	if !null.Estimated {
		t.Errorf("null usage: %+v, want estimated", null)
	}
}

func TestAnthropicCumulativeNeverSummed(t *testing.T) {
	req := mustParse(t, AnthropicMessages, "application/json", `{"model":"c","max_tokens":100,"stream":true}`)
	ev := func(typ, body string) string { return "event: " + typ + "\ndata: " + body + "\n\n" }
	stream := ev("message_start", `{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":50,"output_tokens":1}}}`) +
		ev("message_delta", `{"type":"message_delta","usage":{"output_tokens":15}}`) +
		ev("message_delta", `{"type":"message_delta","usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":50,"output_tokens":30}}`) +
		ev("message_delta", `{"type":"message_delta","usage":{"input_tokens":0,"output_tokens":30}}`) +
		ev("message_stop", `{"type":"message_stop"}`)
	got := usageOf(t, req, "text/event-stream", stream)
	want := Usage{Tokens: usage.Tokens{InputTokens: 160, CachedInputTokens: 100, CacheWriteInputTokens: 50, OutputTokens: 30}}
	if !sameUsage(got, want) {
		t.Errorf("usage %+v\nwant  %+v", got, want)
	}
}

func TestOpenAIInconsistentCachedClamped(t *testing.T) {
	req := mustParse(t, OpenAIResponses, "application/json", `{"model":"m"}`)
	got := usageOf(t, req, "application/json", `{"usage":{"input_tokens":10,"output_tokens":2,"input_tokens_details":{"cached_tokens":25}}}`)
	if got.InputTokens != 10 || got.CachedInputTokens != 10 {
		t.Errorf("usage %+v: cached tokens must not exceed input tokens", got)
	}
	if _, err := (Price{Rates: Rates{Input: 1, CachedInput: 1}}).Cost(got); err != nil {
		t.Errorf("Cost: %v", err)
	}
}

// TestCodeInterpreterContainers checks that code interpreter calls are
// counted by container, once each, whether the stream's added events, its
// terminal output or both name them, and an item added without its id is
// not counted again when the terminal output names it.
func TestCodeInterpreterContainers(t *testing.T) {
	req := mustParse(t, OpenAIResponses, "application/json", `{"model":"m","stream":true,"tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}`)
	item := func(id, container string) string {
		if container == "" {
			return `{"id":"` + id + `","type":"code_interpreter_call","status":"in_progress"}`
		}
		return `{"id":"` + id + `","type":"code_interpreter_call","status":"completed","container_id":"` + container + `"}`
	}
	added := func(it string) string {
		return "data: {\"type\":\"response.output_item.added\",\"item\":" + it + "}\n\n"
	}
	completed := func(items ...string) string {
		return "data: {\"type\":\"response.completed\",\"response\":{\"output\":[" + strings.Join(items, ",") +
			"],\"usage\":{\"input_tokens\":10,\"output_tokens\":2}}}\n\n"
	}
	tests := []struct {
		name, stream string
		want         int64
	}{
		{"two calls, one container", added(item("ci_1", "cntr_a")) + added(item("ci_2", "cntr_a")) + completed(item("ci_1", "cntr_a"), item("ci_2", "cntr_a")), 1},
		{"two containers", added(item("ci_1", "cntr_a")) + added(item("ci_2", "cntr_b")) + completed(item("ci_1", "cntr_a"), item("ci_2", "cntr_b")), 2},
		{"added without its id", added(item("ci_1", "")) + completed(item("ci_1", "cntr_a")), 1},
		{"cut before the end", added(item("ci_1", "cntr_a")) + added(item("ci_2", "cntr_b")), 2},
		{"no ids at all", added(item("ci_1", "")) + added(item("ci_2", "")), 2},
	}
	for _, tc := range tests {
		u := usageOf(t, req, "text/event-stream", tc.stream)
		if u.CodeInterpreterCalls != tc.want {
			t.Errorf("%s: %d containers, want %d", tc.name, u.CodeInterpreterCalls, tc.want)
		}
	}
}
