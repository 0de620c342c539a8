package mockprovider

import (
	"encoding/json"

	"github.com/tidwall/gjson"
)

// OpenAI chat completions (API reference, "Chat Completions": the
// chat.completion object and the chat.completion.chunk stream).

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             chatUsage    `json:"usage"`
	ServiceTier       string       `json:"service_tier"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int64       `json:"index"`
	Message      chatMessage `json:"message"`
	Logprobs     *struct{}   `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
}

type chatMessage struct {
	Role        string     `json:"role"`
	Content     string     `json:"content"`
	Refusal     *string    `json:"refusal"`
	Annotations []struct{} `json:"annotations"`
}

type chatUsage struct {
	PromptTokens            int64             `json:"prompt_tokens"`
	CompletionTokens        int64             `json:"completion_tokens"`
	TotalTokens             int64             `json:"total_tokens"`
	PromptTokensDetails     promptDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails completionDetails `json:"completion_tokens_details"`
}

type promptDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
	AudioTokens  int64 `json:"audio_tokens"`
}

type completionDetails struct {
	ReasoningTokens          int64 `json:"reasoning_tokens"`
	AudioTokens              int64 `json:"audio_tokens"`
	AcceptedPredictionTokens int64 `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int64 `json:"rejected_prediction_tokens"`
}

// chatChunk is one event of a stream. Usage is absent unless the request
// set stream_options.include_usage: then it is null on every chunk and
// the totals on an extra last chunk whose choices are empty.
type chatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	ServiceTier       string            `json:"service_tier"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []chatChunkChoice `json:"choices"`
	Usage             json.RawMessage   `json:"usage,omitempty"`
}

type chatChunkChoice struct {
	Index        int64     `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatDelta struct {
	Role    string          `json:"role,omitempty"`
	Content *string         `json:"content,omitempty"`
	Refusal json.RawMessage `json:"refusal,omitempty"` // null in the first chunk, as OpenAI sends it
}

const systemFingerprint = "fp_tollgate_mock"

// servedTier is the service_tier an OpenAI answer reports: the tier that
// served the request (API reference, service_tier: "the response body
// will include the service_tier value based on the processing mode
// actually used"). The mock serves every request at the tier it asks
// for, priority, flex or scale, and a request for "fast" at "priority",
// as OpenAI does (fast mode is priority processing); "auto", "default"
// or none is served at "default", as a project without a default of its
// own is.
func servedTier(root gjson.Result) string {
	switch t := root.Get("service_tier").Str; t {
	case "priority", "flex", "scale":
		return t
	case "fast":
		return "priority"
	}
	return "default"
}

func (x *exchange) chat() {
	root := gjson.ParseBytes(x.body)
	if !root.Get("messages").IsArray() || len(root.Get("messages").Array()) == 0 {
		x.d.fail(x.w, 400, "Missing required parameter: 'messages'.")
		return
	}
	p := chatPrompt(root)
	rep := makeReply(p.lastUser, x.req.MaxOutputTokens)
	n := x.req.N
	usage := chatUsage{
		PromptTokens:        p.input,
		CompletionTokens:    rep.tokens * n,
		PromptTokensDetails: promptDetails{CachedTokens: x.openAICached(p), AudioTokens: p.audio},
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	finish := "stop"
	if rep.cut {
		finish = "length"
	}
	id, created, model, tier := newID("chatcmpl-mock"), x.p.now().Unix(), x.model(""), servedTier(root)

	if !x.req.Stream {
		c := chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: model,
			Usage: usage, ServiceTier: tier, SystemFingerprint: systemFingerprint}
		for i := range n {
			c.Choices = append(c.Choices, chatChoice{Index: i, FinishReason: finish,
				Message: chatMessage{Role: "assistant", Content: rep.text, Annotations: []struct{}{}}})
		}
		x.writeJSON(c)
		return
	}

	var null json.RawMessage
	if x.req.IncludeUsage {
		null = json.RawMessage("null")
	}
	chunk := func(i int64, d chatDelta, finish *string) chatChunk {
		return chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			ServiceTier: tier, SystemFingerprint: systemFingerprint, Usage: null,
			Choices: []chatChunkChoice{{Index: i, Delta: d, FinishReason: finish}}}
	}
	s := x.startStream()
	empty := ""
	for i := range n {
		s.event("", chunk(i, chatDelta{Role: "assistant", Content: &empty, Refusal: json.RawMessage("null")}, nil))
		for _, piece := range pieces(rep.text) {
			s.event("", chunk(i, chatDelta{Content: &piece}, nil))
		}
		s.event("", chunk(i, chatDelta{}, &finish))
	}
	if x.req.IncludeUsage {
		last := chunk(0, chatDelta{}, nil)
		last.Choices = []chatChunkChoice{}
		last.Usage = marshal(usage)
		s.event("", last)
	}
	s.raw("", []byte("[DONE]"))
}
