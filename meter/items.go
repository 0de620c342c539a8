package meter

import (
	"github.com/tollgate-dev/tollgate/usage"
)

// This file adds up the lists the scanner reads element by element (see
// aItem): Anthropic's usage.iterations, priced step by step, and OpenAI
// Responses output items, which count the built-in tools' calls.

// closeItem adds the element just read, of kind (itemIteration or
// itemOutput), to the document's totals.
func (s *scanner) closeItem(kind uint8) {
	switch kind {
	case itemIteration:
		s.f.items.addIteration(&s.item)
	case itemOutput:
		s.f.items.addOutput(&s.item)
	case itemModalityIn, itemModalityOut:
		s.addModality(kind == itemModalityOut)
	}
}

// addModality adds one Gemini {modality, tokenCount} entry to the
// document's audio or image part of the input (out false) or the output
// (Gemini API reference, ModalityTokenCount). TEXT, VIDEO and DOCUMENT
// tokens are priced as text, so they need no part of their own.
func (s *scanner) addModality(out bool) {
	it := &s.item
	typ := &it.str[isType]
	if !typ.set || it.has&(1<<itIn) == 0 {
		return
	}
	var sl uint8
	switch {
	case typ.is("AUDIO") && out:
		sl = slAudioOut
	case typ.is("AUDIO"):
		sl = slAudioIn
	case typ.is("IMAGE") && out:
		sl = slImageOut
	case typ.is("IMAGE"):
		sl = slImageIn
	default:
		return
	}
	prev, ok := s.f.get(sl)
	if !ok {
		prev = 0 // num keeps an earlier document's value until set
	}
	s.f.set(sl, satAdd(prev, it.num[itIn]))
}

// addIteration appends one usage.iterations entry, normalised like the
// top-level usage: Anthropic's input_tokens excludes the cache counts.
func (t *itemTotals) addIteration(it *itemFields) {
	get := func(slot int) int64 {
		if it.has&(1<<slot) != 0 {
			return it.num[slot]
		}
		return 0
	}
	in, cached := get(itIn), get(itCached)
	write1h, write5m := get(itWrite1h), get(itWrite5m)
	write := max(get(itWrite), satAdd(write1h, write5m))
	step := Iteration{Type: it.str[isType].String(), Model: it.str[isModel].String(), Tokens: usage.Tokens{
		InputTokens:             satAdd(satAdd(in, cached), write),
		CachedInputTokens:       cached,
		CacheWriteInputTokens:   write,
		CacheWrite1hInputTokens: min(write1h, write),
		OutputTokens:            get(itOut),
	}}
	if len(t.iterations) >= maxIterations {
		for i := len(t.iterations) - 1; i >= 0; i-- {
			if last := &t.iterations[i]; last.Type == step.Type && last.Model == step.Model {
				addTokenClasses(&last.Tokens, &step.Tokens)
				return
			}
		}
		last := &t.iterations[len(t.iterations)-1]
		addTokenClasses(&last.Tokens, &step.Tokens)
		if last.Model != step.Model {
			last.Model = "" // priced at the request's model
		}
		return
	}
	t.iterations = append(t.iterations, step)
}

// outputTools maps the Responses output item types of the built-in tools
// billed per call to their tool.
var outputTools = map[string]usage.Tool{
	"web_search_call":       usage.WebSearch,
	"file_search_call":      usage.FileSearch,
	"code_interpreter_call": usage.CodeInterpreter,
	"image_generation_call": usage.ImageGeneration,
}

// addOutput counts one Responses output item.
func (t *itemTotals) addOutput(it *itemFields) {
	typ := &it.str[isType]
	if !typ.set {
		return
	}
	tool, ok := outputTools[string(typ.b[:typ.n])]
	if !ok {
		return
	}
	t.calls[tool]++
	if tool == usage.CodeInterpreter && !t.ids.add(&it.str[isContainer]) {
		t.moreContainers++
	}
}

// add records a container id and reports whether the set tells it
// apart: false for an absent id, or a new one when the set is full (it
// counts as a container of its own).
func (cs *containerSet) add(id *smallString) bool {
	if !id.set {
		return false
	}
	for i := range cs.n {
		if cs.ids[i].is(string(id.b[:id.n])) {
			return true
		}
	}
	if cs.n == maxContainers {
		return false
	}
	cs.ids[cs.n] = *id
	cs.n++
	return true
}

// merge adds the ids of o to cs and returns how many it could not tell
// apart (cs full).
func (cs *containerSet) merge(o *containerSet) int64 {
	var lost int64
	for i := range o.n {
		if !cs.add(&o.ids[i]) {
			lost++
		}
	}
	return lost
}

// responseTools are the built-in tool calls of a Responses response,
// counted two ways, the larger winning: one by one in
// response.output_item.added events (added), and whole in a body's or
// terminal event's output (listed). Code interpreter containers are
// distinct ids, plus those without one.
type responseTools struct {
	added, listed         [usage.NumTools]int64
	addedIDs, listedIDs   containerSet
	addedMore, listedMore int64
}

// count folds one complete document's output items in; typ is its event
// type.
func (rt *responseTools) count(it *itemTotals, typ *smallString) {
	switch {
	case typ.is("response.output_item.added"):
		for i, n := range it.calls {
			rt.added[i] = satAdd(rt.added[i], n)
		}
		rt.addedMore = satAdd(rt.addedMore, satAdd(it.moreContainers, rt.addedIDs.merge(&it.ids)))
	case typ.is("response.output_item.done"):
		// The same item as its added event.
	default:
		// A body, or an event with the whole response.output.
		for i, n := range it.calls {
			rt.listed[i] = max(rt.listed[i], n)
		}
		rt.listedMore = max(rt.listedMore, satAdd(it.moreContainers, rt.listedIDs.merge(&it.ids)))
	}
}

// calls returns the count of tool's calls (for code_interpreter, of its
// containers).
func (rt *responseTools) calls(tool usage.Tool) int64 {
	if tool == usage.CodeInterpreter {
		return max(satAdd(int64(rt.addedIDs.n), rt.addedMore), satAdd(int64(rt.listedIDs.n), rt.listedMore))
	}
	return max(rt.added[tool], rt.listed[tool])
}
