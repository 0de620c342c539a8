package mockprovider

import (
	"encoding/json"

	"github.com/tidwall/gjson"
)

// OpenAI Responses (API reference, "Responses": the response object and
// its streaming events).

type response struct {
	ID                 string          `json:"id"`
	Object             string          `json:"object"`
	CreatedAt          int64           `json:"created_at"`
	Status             string          `json:"status"`
	Error              *struct{}       `json:"error"`
	IncompleteDetails  *incomplete     `json:"incomplete_details"`
	Instructions       json.RawMessage `json:"instructions"`
	MaxOutputTokens    *int64          `json:"max_output_tokens"`
	Model              string          `json:"model"`
	Output             []responseItem  `json:"output"`
	ParallelToolCalls  bool            `json:"parallel_tool_calls"`
	PreviousResponseID *string         `json:"previous_response_id"`
	Reasoning          reasoning       `json:"reasoning"`
	ServiceTier        string          `json:"service_tier"`
	Store              bool            `json:"store"`
	Temperature        json.Number     `json:"temperature"`
	Text               json.RawMessage `json:"text"`
	ToolChoice         string          `json:"tool_choice"`
	Tools              []struct{}      `json:"tools"`
	TopP               json.Number     `json:"top_p"`
	Truncation         string          `json:"truncation"`
	Usage              *responseUsage  `json:"usage"`
	User               *string         `json:"user"`
	Metadata           struct{}        `json:"metadata"`
}

type incomplete struct {
	Reason string `json:"reason"`
}

type reasoning struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

type responseItem struct {
	ID      string        `json:"id"`
	Type    string        `json:"type"`
	Status  string        `json:"status"`
	Content []contentPart `json:"content"`
	Role    string        `json:"role"`
}

type contentPart struct {
	Type        string     `json:"type"`
	Text        string     `json:"text"`
	Annotations []struct{} `json:"annotations"`
}

type responseUsage struct {
	InputTokens         int64         `json:"input_tokens"`
	InputTokensDetails  cachedDetails `json:"input_tokens_details"`
	OutputTokens        int64         `json:"output_tokens"`
	OutputTokensDetails reasoningPart `json:"output_tokens_details"`
	TotalTokens         int64         `json:"total_tokens"`
}

type cachedDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

type reasoningPart struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// Streaming events. Each carries its type and a sequence number.
type (
	responseEvent struct {
		Type     string   `json:"type"`
		Response response `json:"response"`
		Seq      int      `json:"sequence_number"`
	}
	itemEvent struct {
		Type        string       `json:"type"`
		OutputIndex int          `json:"output_index"`
		Item        responseItem `json:"item"`
		Seq         int          `json:"sequence_number"`
	}
	partEvent struct {
		Type         string      `json:"type"`
		ItemID       string      `json:"item_id"`
		OutputIndex  int         `json:"output_index"`
		ContentIndex int         `json:"content_index"`
		Part         contentPart `json:"part"`
		Seq          int         `json:"sequence_number"`
	}
	deltaEvent struct {
		Type         string     `json:"type"`
		ItemID       string     `json:"item_id"`
		OutputIndex  int        `json:"output_index"`
		ContentIndex int        `json:"content_index"`
		Delta        string     `json:"delta"`
		Logprobs     []struct{} `json:"logprobs"`
		Seq          int        `json:"sequence_number"`
	}
	textDoneEvent struct {
		Type         string     `json:"type"`
		ItemID       string     `json:"item_id"`
		OutputIndex  int        `json:"output_index"`
		ContentIndex int        `json:"content_index"`
		Text         string     `json:"text"`
		Logprobs     []struct{} `json:"logprobs"`
		Seq          int        `json:"sequence_number"`
	}
)

func (x *exchange) responses() {
	root := gjson.ParseBytes(x.body)
	if in := root.Get("input"); in.Type != gjson.String && !in.IsArray() {
		x.d.fail(x.w, 400, "Missing required parameter: 'input'.")
		return
	}
	p := responsesPrompt(root)
	rep := makeReply(p.lastUser, x.req.MaxOutputTokens)
	usage := &responseUsage{
		InputTokens:        p.input,
		InputTokensDetails: cachedDetails{CachedTokens: x.openAICached(p)},
		OutputTokens:       rep.tokens,
	}
	usage.TotalTokens = usage.InputTokens + usage.OutputTokens

	r := response{
		ID: newID("resp_mock"), Object: "response", CreatedAt: x.p.now().Unix(), Status: "completed",
		Instructions: json.RawMessage("null"), Model: x.model(""), ParallelToolCalls: true,
		ServiceTier: servedTier(root), Store: true, Temperature: "1.0", Text: json.RawMessage(`{"format":{"type":"text"}}`),
		ToolChoice: "auto", Tools: []struct{}{}, TopP: "1.0", Truncation: "disabled", Usage: usage,
	}
	if in := root.Get("instructions"); in.Type == gjson.String {
		r.Instructions = json.RawMessage(in.Raw)
	}
	if x.req.MaxOutputTokens > 0 {
		r.MaxOutputTokens = &x.req.MaxOutputTokens
	}
	itemStatus := "completed"
	if rep.cut {
		r.Status, itemStatus = "incomplete", "incomplete"
		r.IncompleteDetails = &incomplete{Reason: "max_output_tokens"}
	}
	part := contentPart{Type: "output_text", Text: rep.text, Annotations: []struct{}{}}
	item := responseItem{ID: newID("msg_mock"), Type: "message", Status: itemStatus, Role: "assistant",
		Content: []contentPart{part}}
	r.Output = []responseItem{item}
	if !x.req.Stream {
		x.writeJSON(r)
		return
	}

	s := x.startStream()
	seq := 0
	next := func() int { seq++; return seq - 1 }
	started := r
	started.Status, started.IncompleteDetails, started.Output, started.Usage = "in_progress", nil, []responseItem{}, nil
	s.event("response.created", responseEvent{Type: "response.created", Response: started, Seq: next()})
	s.event("response.in_progress", responseEvent{Type: "response.in_progress", Response: started, Seq: next()})
	open := item
	open.Status, open.Content = "in_progress", []contentPart{}
	s.event("response.output_item.added", itemEvent{Type: "response.output_item.added", Item: open, Seq: next()})
	empty := part
	empty.Text = ""
	s.event("response.content_part.added", partEvent{Type: "response.content_part.added", ItemID: item.ID, Part: empty, Seq: next()})
	for _, piece := range pieces(rep.text) {
		s.event("response.output_text.delta", deltaEvent{Type: "response.output_text.delta", ItemID: item.ID,
			Delta: piece, Logprobs: []struct{}{}, Seq: next()})
	}
	s.event("response.output_text.done", textDoneEvent{Type: "response.output_text.done", ItemID: item.ID,
		Text: rep.text, Logprobs: []struct{}{}, Seq: next()})
	s.event("response.content_part.done", partEvent{Type: "response.content_part.done", ItemID: item.ID, Part: part, Seq: next()})
	s.event("response.output_item.done", itemEvent{Type: "response.output_item.done", Item: item, Seq: next()})
	// A response cut by max_output_tokens ends with response.incomplete
	// instead of response.completed; both carry the usage.
	final := "response.completed"
	if rep.cut {
		final = "response.incomplete"
	}
	s.event(final, responseEvent{Type: final, Response: r, Seq: next()})
}
