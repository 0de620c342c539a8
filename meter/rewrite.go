package meter

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// This file holds Request.Rewrite, the body sent upstream: the output cap
// lowered to what Estimate reserved, and an openai.chat stream's
// stream_options.include_usage forced on.

// capFields returns the request fields that cap an API's output, the one
// Rewrite sets when the request sets none first, or nil for an API
// without one (embeddings, images, audio, flat).
//
// openai.chat has two: max_tokens, deprecated, which OpenAI's reasoning
// models (o-series, gpt-5) refuse, and max_completion_tokens, which every
// current chat model accepts and which counts reasoning tokens too (API
// reference, "max_completion_tokens"). Rewrite adds the latter, and lowers
// whichever the client sent, so a model that takes only max_tokens (an
// older OpenAI-compatible server) keeps it.
func capFields(api API) []string {
	switch api {
	case GoogleGemini:
		return geminiCapFields[:]
	case OpenAIChat:
		return chatCapFields[:]
	case OpenAIResponses:
		return responsesCapFields[:]
	case AnthropicMessages:
		return anthropicCapFields[:]
	}
	return nil
}

var (
	chatCapFields      = [...]string{"max_completion_tokens", "max_tokens"}
	responsesCapFields = [...]string{"max_output_tokens"}
	anthropicCapFields = [...]string{"max_tokens"}
	geminiCapFields    = [...]string{"generationConfig.maxOutputTokens"}
)

// outputCapFields is capFields of r's API, in the spelling r's body uses
// (google.gemini, see parseGemini).
func (r *Request) outputCapFields() []string {
	if r.API == GoogleGemini && r.capPath != "" {
		return []string{r.capPath}
	}
	return capFields(r.API)
}

// Rewrite returns the body to send upstream, and the output cap it set
// in it, or 0 when the request's own stands. It edits the JSON with sjson
// into a new slice, keeping every other byte and leaving body untouched;
// a body it has nothing to change in is returned as is. The caller sets
// Content-Length from the result.
//
// Output cap: ceiling is the one given to Estimate, and the body sent
// upstream asks for no more output per choice than Estimate reserved
// (DESIGN "Preflight estimate": the route's cap, lowered by a plan, is a
// ceiling enforced upstream). In the API's own fields (see capFields), a
// cap that is a positive number within it stands; a higher one, or one
// that is zero, negative or not a number (a provider might read "100000"
// or -1, "no limit" to llama.cpp-style servers, its own way), is replaced
// by it; a null one is removed; and a request left without a cap gets one
// (openai.chat: max_completion_tokens). The returned cap is then the value
// set, for the X-Tollgate-Output-Cap response header. APIs without a cap
// field are left alone.
//
// Usage: for an openai.chat stream, Rewrite forces
// stream_options.include_usage to true — also over an explicit false — so
// that the stream ends with the usage chunk tollgate bills from (OpenAI API
// reference, stream_options: without it a stream carries no usage at all),
// unless r.LeaveStreamUsage.
func (r Request) Rewrite(body []byte, ceiling int64) (out []byte, capSet int64, err error) {
	out = body
	forceUsage := r.API == OpenAIChat && r.Stream && !r.IncludeUsage && !r.LeaveStreamUsage
	if fields := r.outputCapFields(); len(fields) > 0 && r.noCaps {
		// The usual request without a cap: the members Rewrite adds go
		// last (as sjson would put them), in one copy of the body.
		// (Never google.gemini, whose cap is nested: see noCaps.)
		capSet = outputCap(r.MaxOutputTokens, ceiling)
		var buf [96]byte
		m := append(append(append(buf[:0], '"'), fields[0]...), `":`...)
		m = strconv.AppendInt(m, capSet, 10)
		both := forceUsage && r.noStreamOptions
		if both {
			m = append(append(m, ','), includeUsageMember...)
		}
		if o, ok := appendMember(out, m); ok {
			out, forceUsage = o, forceUsage && !both
		} else if out, err = sjson.SetBytes(out, fields[0], capSet); err != nil {
			return nil, 0, fmt.Errorf("meter: cap %s: %w", fields[0], err)
		}
	} else if len(fields) > 0 && !r.capsStand(ceiling) {
		if r.API == GoogleGemini {
			// A null generationConfig is no config: make it an object the
			// cap can be set in.
			cfg, _, _ := strings.Cut(fields[0], ".")
			if gjson.GetBytes(out, cfg).Type == gjson.Null && gjson.GetBytes(out, cfg).Exists() {
				if out, err = sjson.SetRawBytes(out, cfg, []byte(`{}`)); err != nil {
					return nil, 0, fmt.Errorf("meter: cap %s: %w", fields[0], err)
				}
			}
		}
		if out, capSet, err = r.capOutput(out, fields, ceiling); err != nil {
			return nil, 0, err
		}
	}
	if !forceUsage {
		return out, capSet, nil
	}
	if r.noStreamOptions {
		// The usual stream request: nothing to look up, the member goes
		// last (as sjson would put it), and a long conversation is
		// crossed once, by the copy.
		if o, ok := appendMember(out, []byte(includeUsageMember)); ok {
			return o, capSet, nil
		}
	}
	if so := gjson.GetBytes(out, "stream_options"); so.Exists() && !so.IsObject() {
		// null or a scalar: replace it with an object.
		out, err = sjson.SetRawBytes(out, "stream_options", []byte(`{"include_usage":true}`))
	} else {
		out, err = sjson.SetBytes(out, "stream_options.include_usage", true)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("meter: force stream_options.include_usage: %w", err)
	}
	return out, capSet, nil
}

// includeUsageMember is the stream_options Rewrite adds to an openai.chat
// stream request that has none.
const includeUsageMember = `"stream_options":{"include_usage":true}`

// appendMember returns a copy of obj, a JSON object with optional white
// space around it, with member added as its last member, byte for byte
// as sjson.SetRawBytes adds a new key: the white space outside the object
// dropped, the one before its closing brace kept. ok is false when obj
// does not start with '{' and end with '}'.
func appendMember(obj, member []byte) ([]byte, bool) {
	start, end := skipSpace(obj, 0), skipSpaceBack(obj, len(obj)-1)
	if start >= end || obj[start] != '{' || obj[end] != '}' {
		return nil, false
	}
	out := make([]byte, 0, end-start+len(member)+2)
	out = append(out, obj[start:end]...)
	if skipSpaceBack(obj, end-1) > start { // not an empty object
		out = append(out, ',')
	}
	out = append(out, member...)
	return append(out, '}'), true
}

// capsStand reports whether the body sets an output cap and every one it
// sets is a positive number within what Estimate reserves under ceiling,
// as parsing found: capOutput would then leave the body as it is, so
// Rewrite need not read it again (at 100 KB, each field looked up
// crosses the whole conversation).
func (r *Request) capsStand(ceiling int64) bool {
	return r.capsMax > 0 && r.capsMax <= outputCap(r.MaxOutputTokens, ceiling)
}

// capOutput makes the cap fields of body ask for at most what Estimate
// reserves per choice under ceiling (see Rewrite).
func (r Request) capOutput(body []byte, fields []string, ceiling int64) ([]byte, int64, error) {
	limit := outputCap(r.MaxOutputTokens, ceiling)
	out, changed, capped := body, false, false
	var err error
	for _, f := range fields {
		v := gjson.GetBytes(out, f)
		switch {
		case !v.Exists():
			continue
		case v.Type == gjson.Null:
			// Unset, as OpenAI's and Anthropic's APIs read it; a value is
			// added below if no other field caps the output.
			out, err = sjson.DeleteBytes(out, f)
		case v.Type == gjson.Number && v.Num > 0 && capInt(v) <= limit:
			capped = true
			continue
		default:
			out, err = sjson.SetBytes(out, f, limit)
			capped = true
		}
		if err != nil {
			return nil, 0, fmt.Errorf("meter: cap %s: %w", f, err)
		}
		changed = true
	}
	if !capped {
		if out, err = sjson.SetBytes(out, fields[0], limit); err != nil {
			return nil, 0, fmt.Errorf("meter: cap %s: %w", fields[0], err)
		}
		changed = true
	}
	if !changed {
		return body, 0, nil
	}
	return out, limit, nil
}
