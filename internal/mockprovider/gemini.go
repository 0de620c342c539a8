package mockprovider

import (
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/meter"
)

// Gemini generateContent (Gemini API reference, "Generating content": the
// GenerateContentResponse, streamed as server-sent events with alt=sse or
// as one JSON array written element by element without it).

type geminiResponse struct {
	Candidates    []geminiCandidate `json:"candidates"`
	UsageMetadata *geminiUsage      `json:"usageMetadata,omitempty"`
	ModelVersion  string            `json:"modelVersion"`
	ResponseID    string            `json:"responseId"`
}

type geminiCandidate struct {
	Content      geminiContent `json:"content"`
	FinishReason string        `json:"finishReason,omitempty"`
	Index        int64         `json:"index"`
}

type geminiContent struct {
	Parts []geminiPart `json:"parts"`
	Role  string       `json:"role"`
}

type geminiPart struct {
	Text string `json:"text"`
}

// geminiUsage leaves zero counts out, as proto3 JSON does.
type geminiUsage struct {
	PromptTokenCount     int64                 `json:"promptTokenCount,omitempty"`
	CandidatesTokenCount int64                 `json:"candidatesTokenCount,omitempty"`
	TotalTokenCount      int64                 `json:"totalTokenCount,omitempty"`
	PromptTokensDetails  []geminiModalityCount `json:"promptTokensDetails,omitempty"`
}

type geminiModalityCount struct {
	Modality   string `json:"modality"`
	TokenCount int64  `json:"tokenCount"`
}

// geminiPrompt reads a generateContent request: its systemInstruction
// and contents. A text part counts its bytes; an inlineData or fileData
// part MediaTokens, reported as AUDIO tokens when its MIME type is
// audio/*, as Gemini reports its modalities.
func geminiPrompt(root gjson.Result) prompt {
	var p prompt
	add := func(c gjson.Result) {
		var text, media, audio int64
		user := ""
		c.Get("parts").ForEach(func(_, part gjson.Result) bool {
			if t := part.Get("text"); t.Type == gjson.String {
				text += int64(len(t.Str))
				user += t.Str
			}
			for _, k := range []string{"inlineData", "inline_data", "fileData", "file_data"} {
				if d := part.Get(k); d.IsObject() {
					media++
					mt := d.Get("mimeType").Str + d.Get("mime_type").Str
					if strings.HasPrefix(mt, "audio/") {
						audio++
					}
				}
			}
			return true
		})
		n := ceilDiv(text, BytesPerToken) + media*MediaTokens
		p.blocks = append(p.blocks, block{raw: c.Raw, tokens: n})
		p.input += n
		p.audio += audio * MediaTokens
		if r := c.Get("role").Str; r == "user" || r == "" {
			p.lastUser = user
		}
	}
	for _, k := range []string{"systemInstruction", "system_instruction"} {
		if s := root.Get(k); s.IsObject() {
			add(s)
			p.lastUser = ""
		}
	}
	root.Get("contents").ForEach(func(_, c gjson.Result) bool {
		add(c)
		return true
	})
	return p
}

func (x *exchange) gemini() {
	model, stream, ok := meter.GeminiTarget(x.path)
	if !ok {
		x.d.fail(x.w, http.StatusNotFound, "mock provider: "+x.path+" is not a generateContent or streamGenerateContent path")
		return
	}
	root := gjson.ParseBytes(x.body)
	if !root.Get("contents").IsArray() || len(root.Get("contents").Array()) == 0 {
		x.d.fail(x.w, http.StatusBadRequest, "* GenerateContentRequest.contents: contents is not specified")
		return
	}
	p := geminiPrompt(root)
	rep := makeReply(p.lastUser, x.req.MaxOutputTokens)
	n := x.req.N
	finish := "STOP"
	if rep.cut {
		finish = "MAX_TOKENS"
	}
	id := newID("mock-")
	usageAt := func(out int64) *geminiUsage {
		u := &geminiUsage{PromptTokenCount: p.input, CandidatesTokenCount: out * n, TotalTokenCount: p.input + out*n}
		if text := p.input - p.audio; text > 0 {
			u.PromptTokensDetails = append(u.PromptTokensDetails, geminiModalityCount{"TEXT", text})
		}
		if p.audio > 0 {
			u.PromptTokensDetails = append(u.PromptTokensDetails, geminiModalityCount{"AUDIO", p.audio})
		}
		return u
	}
	response := func(text, finish string, out int64) geminiResponse {
		r := geminiResponse{ModelVersion: model, ResponseID: id, UsageMetadata: usageAt(out)}
		for i := range n {
			r.Candidates = append(r.Candidates, geminiCandidate{
				Content: geminiContent{Parts: []geminiPart{{Text: text}}, Role: "model"}, FinishReason: finish, Index: i})
		}
		return r
	}
	if !stream {
		x.writeJSON(response(rep.text, finish, rep.tokens))
		return
	}
	// Two chunks: the first half of the reply, then the rest with the
	// finish reason; usageMetadata in each with running totals.
	half := len(rep.text) / 2
	first := response(rep.text[:half], "", textTokens(rep.text[:half]))
	last := response(rep.text[half:], finish, rep.tokens)
	sse := x.r.URL.Query().Get("alt") == "sse"
	h := x.w.Header()
	if sse {
		h.Set("Content-Type", "text/event-stream")
	} else {
		h.Set("Content-Type", "application/json; charset=UTF-8")
	}
	x.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(x.w)
	for i, r := range []geminiResponse{first, last} {
		var b []byte
		switch {
		case sse:
			// Google ends each event with CRLF CRLF.
			b = append(append([]byte("data: "), marshal(r)...), "\r\n\r\n"...)
		case i == 0:
			b = append([]byte("["), marshal(r)...)
		default:
			b = append(append([]byte("\r\n,"), marshal(r)...), ']')
		}
		if _, err := x.w.Write(b); err != nil || rc.Flush() != nil {
			return // the client went away
		}
	}
}
