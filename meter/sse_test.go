package meter

import "testing"

func TestMultiLineData(t *testing.T) {
	// Two data lines of one event join with LF: valid JSON across lines.
	req := chatReq(t, true)
	stream := "data: {\"choices\":[],\n" + "data: \"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n"
	u := usageOf(t, req, "text/event-stream", stream)
	if u.InputTokens != 7 || u.OutputTokens != 3 || u.Estimated {
		t.Errorf("usage %+v", u)
	}
	// "data" with no colon is an empty data line; "data:x" has no space to strip.
	u = usageOf(t, req, "text/event-stream", "data\ndata:{\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\n")
	if u.InputTokens != 2 || u.Estimated {
		t.Errorf("usage %+v", u)
	}
}
