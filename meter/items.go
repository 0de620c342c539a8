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
		s.f.items.addOutput(&s.item, s.containers)
	}
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

// addOutput counts one Responses output item, its container in cs.
func (t *itemTotals) addOutput(it *itemFields, cs *containerSet) {
	typ := &it.str[isType]
	if !typ.set {
		return
	}
	tool, ok := outputTools[string(typ.b[:typ.n])]
	if !ok {
		return
	}
	t.calls[tool]++
	if tool == usage.CodeInterpreter && !cs.add(&it.str[isContainer]) {
		t.moreContainers++
	}
}

// add records a container id and reports whether the set tells it
// apart: false for an absent id, or a new one when the set is full (it
// counts as a container of its own). A nil set tells nothing apart.
func (cs *containerSet) add(id *smallString) bool {
	if cs == nil || !id.set {
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
