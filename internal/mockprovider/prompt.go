package mockprovider

import (
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// This file holds the mock's token rules: what a prompt's pieces are, how
// many tokens each counts, and the reply.

// mediaTypes are the "type" values of prompt parts that carry an image, a
// file or audio, which count MediaTokens each instead of their bytes.
// Audio parts are also reported apart, as the audio tokens of the input
// (OpenAI chat's prompt_tokens_details.audio_tokens); image and file parts
// are not: OpenAI's chat and Responses bill them as text tokens, and
// Anthropic reports no parts.
var mediaTypes = map[string]bool{
	"image_url":   true, // OpenAI chat
	"input_audio": true,
	"file":        true,
	"input_image": true, // OpenAI Responses
	"input_file":  true,
	"image":       true, // Anthropic
	"document":    true,
}

// maxWalkDepth bounds how deep tokens looks into a value; tollgate refuses
// bodies nested more deeply than meter.MaxJSONDepth before they get here.
const maxWalkDepth = 64

// audioPart is the "type" of an audio part of a prompt (OpenAI chat).
const audioPart = "input_audio"

// tokens counts a piece of a prompt: ⌈bytes ÷ BytesPerToken⌉ of its string
// values (cache_control markers left out), plus MediaTokens per media
// part; audio is the part of them that audio parts count.
func tokens(v gjson.Result) (all, audio int64) {
	var c partCounts
	walk(v, 0, &c)
	return ceilDiv(c.text, BytesPerToken) + c.media*MediaTokens, c.audio * MediaTokens
}

// partCounts are what walk finds: text bytes, media parts, and the audio
// parts among them.
type partCounts struct{ text, media, audio int64 }

func walk(v gjson.Result, depth int, c *partCounts) {
	if depth > maxWalkDepth {
		return
	}
	switch {
	case v.Type == gjson.String:
		c.text += int64(len(v.Str))
	case v.IsObject():
		if t := v.Get("type"); t.Type == gjson.String && mediaTypes[t.Str] {
			c.media++
			if t.Str == audioPart {
				c.audio++
			}
			return
		}
		v.ForEach(func(k, e gjson.Result) bool {
			if k.Str != "cache_control" { // a marker, not prompt
				walk(e, depth+1, c)
			}
			return true
		})
	case v.IsArray():
		v.ForEach(func(_, e gjson.Result) bool {
			walk(e, depth+1, c)
			return true
		})
	}
}

// textTokens counts plain text.
func textTokens(s string) int64 { return ceilDiv(int64(len(s)), BytesPerToken) }

// block is one piece of a prompt, in the order the provider reads them.
type block struct {
	raw    string // its JSON, which identifies it in the prompt cache
	tokens int64
	// marked is true for an Anthropic block that carries cache_control (a
	// message whose content does), hour for one whose ttl is "1h".
	marked, hour bool
}

// prompt is a request's prompt as the mock reads it.
type prompt struct {
	blocks   []block
	input    int64  // Σ blocks' tokens
	audio    int64  // the part of input that audio parts count
	lastUser string // the text of the last user message, for the reply
}

func (p *prompt) add(v gjson.Result) {
	all, audio := tokens(v)
	b := block{raw: v.Raw, tokens: all}
	b.marked, b.hour = cacheMark(v)
	p.blocks = append(p.blocks, b)
	p.input += all
	p.audio += audio
}

// cacheMark reports whether v, an Anthropic tool, system block or message,
// carries cache_control, on itself or on one of its content blocks, and
// whether its ttl is an hour.
func cacheMark(v gjson.Result) (marked, hour bool) {
	check := func(c gjson.Result) {
		if cc := c.Get("cache_control"); cc.IsObject() {
			marked = true
			hour = hour || cc.Get("ttl").Str == "1h"
		}
	}
	if !v.IsObject() {
		return false, false
	}
	check(v)
	v.Get("content").ForEach(func(_, c gjson.Result) bool {
		if c.IsObject() {
			check(c)
		}
		return true
	})
	return marked, hour
}

// chatPrompt reads an OpenAI chat request: its messages.
func chatPrompt(root gjson.Result) prompt {
	var p prompt
	root.Get("messages").ForEach(func(_, m gjson.Result) bool {
		p.add(m)
		if m.Get("role").Str == "user" {
			p.lastUser = contentText(m.Get("content"))
		}
		return true
	})
	return p
}

// responsesPrompt reads an OpenAI Responses request: its instructions,
// then its input, a string or a list of items.
func responsesPrompt(root gjson.Result) prompt {
	var p prompt
	if in := root.Get("instructions"); in.Type == gjson.String {
		p.add(in)
	}
	input := root.Get("input")
	if input.Type == gjson.String {
		p.add(input)
		p.lastUser = input.Str
		return p
	}
	input.ForEach(func(_, item gjson.Result) bool {
		p.add(item)
		if item.Get("role").Str == "user" {
			p.lastUser = contentText(item.Get("content"))
		}
		return true
	})
	return p
}

// messagesPrompt reads an Anthropic Messages request in the order its
// prompt cache prefixes run: tools, system, messages.
func messagesPrompt(root gjson.Result) prompt {
	var p prompt
	root.Get("tools").ForEach(func(_, t gjson.Result) bool {
		p.add(t)
		return true
	})
	if sys := root.Get("system"); sys.Type == gjson.String {
		p.add(sys)
	} else {
		sys.ForEach(func(_, b gjson.Result) bool {
			p.add(b)
			return true
		})
	}
	root.Get("messages").ForEach(func(_, m gjson.Result) bool {
		p.add(m)
		if m.Get("role").Str == "user" {
			p.lastUser = contentText(m.Get("content"))
		}
		return true
	})
	return p
}

// contentText is the text of a message's content: the string, or its
// text parts (OpenAI's "text" and "input_text", Anthropic's "text") joined
// by newlines.
func contentText(c gjson.Result) string {
	if c.Type == gjson.String {
		return c.Str
	}
	var parts []string
	c.ForEach(func(_, part gjson.Result) bool {
		switch part.Get("type").Str {
		case "text", "input_text":
			parts = append(parts, part.Get("text").Str)
		}
		return true
	})
	return strings.Join(parts, "\n")
}

// reply is the mock's answer text and what it costs.
type reply struct {
	text   string
	tokens int64
	cut    bool // the output cap cut it short
}

// makeReply returns the mock's answer to a prompt whose last user message
// has the text user, under the output cap limit (0: none): "You said: "
// followed by that text, or "You said nothing." when it is empty; cut to
// limit × BytesPerToken bytes (at a character boundary) when it is
// longer. Its tokens are ⌈its bytes ÷ BytesPerToken⌉.
func makeReply(user string, limit int64) reply {
	text := "You said: " + user
	if user == "" {
		text = "You said nothing."
	}
	cut := false
	if limit > 0 && int64(len(text)) > limit*BytesPerToken {
		n := int(limit * BytesPerToken)
		for n > 0 && !utf8.RuneStart(text[n]) {
			n--
		}
		text, cut = text[:n], true
	}
	return reply{text: text, tokens: textTokens(text), cut: cut}
}

// pieces splits text into the pieces a stream sends, one word each with
// the space before it, as providers stream about a token at a time.
func pieces(text string) []string {
	var out []string
	start := 0
	for i := 1; i < len(text); i++ {
		if text[i] == ' ' && text[i-1] != ' ' {
			out = append(out, text[start:i])
			start = i
		}
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}
