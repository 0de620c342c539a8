package meter

import (
	"strings"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/usage"
)

// This file reads what a request says about how it may be billed beyond
// its tokens: the service tier, speed and inference geography it asks for
// (which select price variants), and the server-side tools it offers the
// model, whose calls the preflight holds for.

// The server-tool kinds a route's ServerTools sets allowances for: the
// tools billed per call (usage.Tool names), the advisor, and every other
// server-side tool (MCP servers, tool search) whose results add to the
// input without a fee.
const (
	ToolKindAdvisor = "advisor"
	ToolKindOther   = "other"
)

// ServerToolKinds lists the kinds ServerTools may set, in documentation
// order.
func ServerToolKinds() []string {
	return append(append([]string(nil), usage.ToolNames()...), ToolKindAdvisor, ToolKindOther)
}

// ToolAllowance is what the preflight holds for the calls of one kind of
// server-side tool.
type ToolAllowance struct {
	// MaxUses is how many calls are held for when the request's tool sets
	// no max_uses of its own (OpenAI's tools have none; the request's
	// max_tool_calls then bounds them all). Must be > 0.
	MaxUses int64
	// InputTokens is what one call's result may add to the input: search
	// results, a fetched page, code output, an advisor's advice. Every
	// later sampling step reads it again. Must be > 0. A web fetch's own
	// max_content_tokens, and an advisor's max_tokens, replace it.
	InputTokens int64
}

// ServerTools are a route's allowances by kind (see ServerToolKinds). A
// kind without an entry, or a nil ServerTools, uses DefaultToolAllowance.
type ServerTools map[string]ToolAllowance

// DefaultToolAllowance returns the built-in allowance of kind: 5 calls,
// and per call 25,000 input tokens for a web search or any other tool (a
// page of results), 50,000 for a web fetch, 16,000 for a file search,
// 10,000 for code execution and code interpreter output, 5,000 for an
// image generation (the image passed back), and the route's output
// ceiling for an advisor's advice.
func DefaultToolAllowance(kind string) ToolAllowance {
	a := ToolAllowance{MaxUses: DefaultServerToolUses, InputTokens: 25_000}
	switch kind {
	case "web_fetch":
		a.InputTokens = 50_000
	case "file_search":
		a.InputTokens = 16_000
	case "code_execution", "code_interpreter":
		a.InputTokens = 10_000
	case "image_generation":
		a.InputTokens = ImageTokenCeiling
	case ToolKindAdvisor:
		a.InputTokens = 0 // the advisor's output cap
	}
	return a
}

// DefaultServerToolUses is the number of calls of a server-side tool the
// preflight holds for when neither the request's tool (max_uses) nor the
// route's server_tools bounds them.
const DefaultServerToolUses = 5

// allowance returns st's allowance for kind, or the default.
func (st ServerTools) allowance(kind string) ToolAllowance {
	if a, ok := st[kind]; ok {
		return a
	}
	return DefaultToolAllowance(kind)
}

// serverTool is one server-side tool a request offers.
type serverTool struct {
	kind    string
	maxUses int64  // the tool's max_uses, or 0
	perCall int64  // web_fetch max_content_tokens or advisor max_tokens, or 0
	model   string // the advisor's model
}

// parseVariants reads service_tier (openai.chat, openai.responses,
// anthropic.messages), speed and inference_geo (anthropic.messages).
func (r *Request) parseVariants(fs *bodyFields) {
	str := func(f int) string {
		if v, ok := jsonStr(fs[f]); ok {
			return strings.Clone(v)
		}
		return ""
	}
	switch r.API {
	case OpenAIChat, OpenAIResponses:
		r.serviceTier = str(fServiceTier)
	case AnthropicMessages:
		r.serviceTier = str(fServiceTier)
		r.speed = str(fSpeed)
		r.inferenceGeo = str(fInferenceGeo)
	}
}

// parseServerTools reads the server-side tools of an anthropic.messages
// or openai.responses request. Client tools (functions, bash, computer
// use, the text editor) end the response with a tool call the client
// runs, so they need no allowance; server tools run inside the response,
// each call starting another sampling step.
func (r *Request) parseServerTools(fs *bodyFields) {
	if r.API != AnthropicMessages && r.API != OpenAIResponses {
		return
	}
	for tools := iterate(fs[fTools]); ; {
		_, t, ok := tools.next()
		if !ok {
			break
		}
		if st, ok := r.serverTool(t); ok {
			r.tools = append(r.tools, st)
		}
	}
	if r.API == AnthropicMessages {
		var edits string
		if cm := fs[fContextManagement]; isObject(cm) {
			edits = firstMember(cm, "edits")
		}
		for it := iterate(edits); ; {
			_, e, ok := it.next()
			if !ok {
				break
			}
			if t, ok := jsonStr(firstMember(e, "type")); ok && strings.HasPrefix(t, "compact_") {
				r.compaction = true
			}
		}
		// Tools of MCP servers named in the request run upstream too.
		for it := iterate(fs[fMCPServers]); ; {
			if _, _, ok := it.next(); !ok {
				break
			}
			r.tools = append(r.tools, serverTool{kind: ToolKindOther})
		}
	}
	if v := fs.get(fMaxToolCalls); r.API == OpenAIResponses && v.Type == gjson.Number && v.Num >= 1 {
		r.maxToolCalls = capInt(v)
	}
}

// serverTool reads one entry of "tools", raw JSON, in one walk; ok is
// false for a client tool or an entry that is not a tool object.
func (r *Request) serverTool(t string) (serverTool, bool) {
	if !isObject(t) {
		return serverTool{}, false
	}
	// The first of each key, as gjson's Get reads it.
	var typ, maxUses, maxContent, maxTokens, model string
	for it := iterate(t); ; {
		k, v, ok := it.next()
		if !ok {
			break
		}
		var f *string
		switch k {
		case "type":
			f = &typ
		case "max_uses":
			f = &maxUses
		case "max_content_tokens":
			f = &maxContent
		case "max_tokens":
			f = &maxTokens
		case "model":
			f = &model
		default:
			continue
		}
		if *f == "" {
			*f = v
		}
	}
	ts, ok := jsonStr(typ)
	if !ok {
		return serverTool{}, false
	}
	kind := serverToolKind(r.API, ts)
	if kind == "" {
		return serverTool{}, false
	}
	st := serverTool{kind: kind}
	count := func(raw string) int64 {
		if v := gjson.Parse(raw); v.Type == gjson.Number && v.Num >= 1 {
			return capInt(v)
		}
		return 0
	}
	st.maxUses = count(maxUses)
	switch kind {
	case "web_fetch":
		st.perCall = count(maxContent)
	case ToolKindAdvisor:
		st.perCall = count(maxTokens)
		if v, ok := jsonStr(model); ok {
			st.model = strings.Clone(v)
		}
	}
	return st, true
}

// serverToolKind classifies a tool "type" of api: a usage.Tool name,
// ToolKindAdvisor, ToolKindOther, or "" for a client tool. Anthropic's
// server tools are versioned ("web_search_20250305"), so they are matched
// by prefix (Anthropic "Server tools"); OpenAI's by name or prefix
// ("web_search_preview_2025_03_11"; "Built-in tools").
func serverToolKind(api API, typ string) string {
	if api == AnthropicMessages {
		switch {
		case strings.HasPrefix(typ, "web_search_"):
			return "web_search"
		case strings.HasPrefix(typ, "web_fetch_"):
			return "web_fetch"
		case strings.HasPrefix(typ, "code_execution_"):
			return "code_execution"
		case strings.HasPrefix(typ, "advisor_"):
			return ToolKindAdvisor
		case strings.HasPrefix(typ, "tool_search_tool_"), typ == "mcp_toolset":
			return ToolKindOther
		}
		return ""
	}
	switch {
	case strings.HasPrefix(typ, "web_search"):
		return "web_search"
	case typ == "file_search", typ == "code_interpreter", typ == "image_generation":
		return typ
	case typ == "mcp":
		return ToolKindOther
	}
	return ""
}
