package mockprovider

import (
	"cmp"

	"github.com/tidwall/gjson"
)

// Anthropic Messages (API reference, "Messages" and "Streaming
// Messages"; prompt caching: "Prompt caching", whose usage fields
// input_tokens excludes).

type message struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []messageBlock `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        messageUsage   `json:"usage"`
}

type messageBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type messageUsage struct {
	InputTokens              int64          `json:"input_tokens"`
	CacheCreationInputTokens int64          `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64          `json:"cache_read_input_tokens"`
	CacheCreation            *cacheCreation `json:"cache_creation,omitempty"`
	OutputTokens             int64          `json:"output_tokens"`
	ServiceTier              string         `json:"service_tier,omitempty"`
	Speed                    string         `json:"speed,omitempty"`
	InferenceGeo             string         `json:"inference_geo,omitempty"`
}

type cacheCreation struct {
	Ephemeral5m int64 `json:"ephemeral_5m_input_tokens"`
	Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
}

// Streaming events.
type (
	messageStart struct {
		Type    string  `json:"type"`
		Message message `json:"message"`
	}
	blockStart struct {
		Type         string       `json:"type"`
		Index        int          `json:"index"`
		ContentBlock messageBlock `json:"content_block"`
	}
	blockDelta struct {
		Type  string    `json:"type"`
		Index int       `json:"index"`
		Delta textDelta `json:"delta"`
	}
	textDelta struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	blockStop struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}
	messageDelta struct {
		Type  string       `json:"type"`
		Delta stopDelta    `json:"delta"`
		Usage messageUsage `json:"usage"`
	}
	stopDelta struct {
		StopReason   string  `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
	}
	typeOnly struct {
		Type string `json:"type"`
	}
)

func (x *exchange) messages() {
	root := gjson.ParseBytes(x.body)
	switch {
	case x.req.MaxOutputTokens <= 0:
		// Anthropic requires max_tokens; tollgate adds the route's cap
		// when a client leaves it out.
		x.d.fail(x.w, 400, "max_tokens: Field required")
		return
	case !root.Get("messages").IsArray() || len(root.Get("messages").Array()) == 0:
		x.d.fail(x.w, 400, "messages: Field required")
		return
	}
	p := messagesPrompt(root)
	rep := makeReply(p.lastUser, x.req.MaxOutputTokens)
	read, write5m, write1h := x.anthropicCache(p)
	usage := messageUsage{
		InputTokens:              p.input - read - write5m - write1h,
		CacheCreationInputTokens: write5m + write1h,
		CacheReadInputTokens:     read,
		CacheCreation:            &cacheCreation{Ephemeral5m: write5m, Ephemeral1h: write1h},
		OutputTokens:             rep.tokens,
		// How the request was served: at the standard tier (the mock
		// has no Priority Tier capacity), at the speed it asks for
		// (fast mode: "speed": "fast"; not reported when it names
		// none), in the geography it asks for ("inference_geo", else
		// "global", the default) (API reference, Usage; "Fast mode";
		// "Data residency").
		ServiceTier:  "standard",
		Speed:        root.Get("speed").Str,
		InferenceGeo: cmp.Or(root.Get("inference_geo").Str, "global"),
	}
	stop := "end_turn"
	if rep.cut {
		stop = "max_tokens"
	}
	m := message{ID: newID("msg_mock"), Type: "message", Role: "assistant", Model: x.model(""),
		Content: []messageBlock{{Type: "text", Text: rep.text}}, StopReason: &stop, Usage: usage}
	if !x.req.Stream {
		x.writeJSON(m)
		return
	}

	// message_start carries the input counts and a provisional output
	// count; message_delta the final, cumulative counts.
	start := m
	start.Content, start.StopReason = []messageBlock{}, nil
	start.Usage.OutputTokens = 1
	s := x.startStream()
	s.event("message_start", messageStart{Type: "message_start", Message: start})
	s.event("content_block_start", blockStart{Type: "content_block_start", ContentBlock: messageBlock{Type: "text"}})
	s.event("ping", typeOnly{Type: "ping"})
	for _, piece := range pieces(rep.text) {
		s.event("content_block_delta", blockDelta{Type: "content_block_delta", Delta: textDelta{Type: "text_delta", Text: piece}})
	}
	s.event("content_block_stop", blockStop{Type: "content_block_stop"})
	final := usage
	final.CacheCreation, final.ServiceTier, final.Speed, final.InferenceGeo = nil, "", "", ""
	s.event("message_delta", messageDelta{Type: "message_delta", Delta: stopDelta{StopReason: stop}, Usage: final})
	s.event("message_stop", typeOnly{Type: "message_stop"})
}
