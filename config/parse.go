package config

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-dev/tollgate/money"
)

// maxNodes bounds how many nodes the walk visits, following aliases, so
// that a document of nested aliases ("billion laughs") cannot make it run
// for ever.
const maxNodes = 1_000_000

// parser walks the YAML node tree against the schema, building the Config
// as it goes. It reports structure and syntax (unknown keys, wrong kinds,
// bad decimals and durations); Config.check reports the values.
type parser struct {
	file     string
	env      func(string) (string, bool)
	cfg      *Config
	problems []*Problem
	reported map[string]bool // paths with a problem, which check skips
	nodes    int
	present  map[string]bool     // key paths present in the file
	bad      map[*yaml.Node]bool // scalars whose ${VAR} could not be expanded
	// secretPaths[i] is where Stripe.WebhookSecrets[i] came from.
	secretPaths []string
}

func (p *parser) errorf(line int, path, format string, args ...any) {
	p.problems = append(p.problems, &Problem{File: p.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...), col: p.cfg.column(path, line)})
	p.reported[path] = true
}

func (p *parser) warnf(line int, path, format string, args ...any) {
	p.cfg.Warnings = append(p.cfg.Warnings, Warning{File: p.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...), col: p.cfg.column(path, line)})
}

// record notes where path is in the file, for the messages about it.
func (p *parser) record(path string, line, col int) { p.cfg.pos[path] = position{line, col} }

// yamlLine matches the position yaml.v3 puts in its syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document reads the one YAML document in r, expands ${VAR} and walks it.
// It returns false when there is no document to walk.
func (p *parser) document(r io.Reader) bool {
	p.reported = map[string]bool{}
	p.present = map[string]bool{}
	p.bad = map[*yaml.Node]bool{}
	p.cfg.pos = map[string]position{}
	p.cfg.skip = map[string]bool{}

	dec := yaml.NewDecoder(r)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(0, "", "is empty; start from config.example.yaml")
		} else {
			p.yamlError(err)
		}
		return false
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		p.errorf(extra.Line, "", "holds a second YAML document (after a --- line); put the whole configuration in one document")
		return false
	case !errors.Is(err, io.EOF):
		p.yamlError(err)
		return false
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		p.errorf(0, "", "is empty; start from config.example.yaml")
		return false
	}
	root := doc.Content[0]
	p.expandTree(root, "")
	p.root(root)
	p.warnings()
	sortByPosition(p.cfg.Warnings, func(w Warning) (int, int) { return w.Line, w.col })
	return true
}

func (p *parser) yamlError(err error) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errorf(line, "", "is not valid YAML: %s", m[2])
		return
	}
	p.errorf(0, "", "is not valid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// expandTree expands ${VAR} in every scalar value below n, in place. Keys
// are left alone, and aliases are expanded where their anchor is defined.
func (p *parser) expandTree(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p.expandTree(n.Content[i+1], keyPath(path, n.Content[i].Value))
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.expandTree(c, indexPath(path, i))
		}
	case yaml.ScalarNode:
		out, unset, err := expand(n.Value, p.env)
		if err != nil {
			p.errorf(n.Line, path, "%v", err)
			p.bad[n] = true
			return
		}
		for _, name := range unset {
			p.warnf(n.Line, path, "environment variable %s is not set; it expands to \"\"", name)
		}
		n.Value = out
	}
}

// resolve follows aliases, counting nodes against maxNodes.
func (p *parser) resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	p.nodes++
	if p.nodes == maxNodes {
		p.errorf(0, "", "expands to more than %d nodes through aliases; write it out plainly", maxNodes)
	}
	if p.nodes >= maxNodes {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

// pair is one key: value of a mapping.
type pair struct {
	key   string
	kline int
	kcol  int
	val   *yaml.Node
}

// pairs returns the entries of mapping n, with YAML merge keys ("<<:
// *anchor") applied: an explicit key wins over a merged one. It reports a
// key set twice and returns nil when n is not a mapping.
func (p *parser) pairs(n *yaml.Node, path, want string) []pair {
	n = p.resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, path, "want %s, got %s", want, kindName(n))
		return nil
	}
	var own, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merged = append(merged, p.merge(v, path, want)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, path, "has a key that is %s; keys are plain names", kindName(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k.Line, keyPath(path, k.Value), "is set twice (first on line %d); keep one", first)
			continue
		}
		seen[k.Value] = k.Line
		own = append(own, pair{key: k.Value, kline: k.Line, kcol: k.Column, val: v})
	}
	for _, m := range merged {
		if _, ok := seen[m.key]; !ok {
			seen[m.key] = m.kline
			own = append(own, m)
		}
	}
	return own
}

// merge returns the pairs a merge key's value brings in: one mapping or a
// list of them, earlier ones winning.
func (p *parser) merge(v *yaml.Node, path, want string) []pair {
	v = p.resolve(v)
	if v == nil {
		return nil
	}
	if v.Kind == yaml.SequenceNode {
		var out []pair
		have := map[string]bool{}
		for _, c := range v.Content {
			for _, m := range p.pairs(c, path, want) {
				if !have[m.key] {
					have[m.key] = true
					out = append(out, m)
				}
			}
		}
		return out
	}
	return p.pairs(v, path, want)
}

// fields is a mapping whose keys come from a fixed set.
type fields struct {
	path string
	line int
	n    int // keys in the mapping, allowed or not
	vals map[string]pair
}

// mapping checks that n is a mapping of allowed keys and returns them. An
// absent or null n is an empty mapping.
func (p *parser) mapping(n *yaml.Node, path, want string, allowed []string) fields {
	f := fields{path: path, vals: map[string]pair{}}
	if r := p.resolve(n); r != nil {
		f.line = r.Line
	}
	for _, kv := range p.pairs(n, path, want) {
		if path == "" && strings.HasPrefix(kv.key, "x-") {
			continue // a place for YAML anchors, as in Docker Compose
		}
		f.n++
		if !slices.Contains(allowed, kv.key) {
			p.unknownKey(kv, path, allowed)
			continue
		}
		f.vals[kv.key] = kv
		kp := keyPath(path, kv.key)
		p.present[kp] = true
		p.record(kp, kv.kline, kv.kcol)
	}
	return f
}

func (p *parser) unknownKey(kv pair, path string, allowed []string) {
	hint := ""
	if s := suggest(kv.key, allowed); s != "" {
		hint = " (did you mean " + s + "?)"
	}
	also := ""
	if path == "" {
		also = " (and x-… keys, which are ignored)"
	}
	p.errorf(kv.kline, keyPath(path, kv.key), "unknown key%s; allowed keys: %s%s", hint, strings.Join(allowed, ", "), also)
}

// suggest returns the allowed key closest to key when it is a likely typo.
func suggest(key string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(key), a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// text returns the scalar value of key in f: ok is false when the key is
// absent or not a single value (which is reported). A null value is "".
func (p *parser) text(f fields, key string) (val string, line int, ok bool) {
	kv, ok := f.vals[key]
	if !ok {
		return "", 0, false
	}
	return p.scalar(kv.val, keyPath(f.path, key))
}

func (p *parser) scalar(n *yaml.Node, path string) (string, int, bool) {
	n = p.resolve(n)
	if n == nil {
		return "", 0, false
	}
	p.record(path, n.Line, n.Column)
	if p.bad[n] {
		return "", n.Line, false
	}
	if isNull(n) {
		return "", n.Line, true
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, path, "want a single value, got %s", kindName(n))
		return "", n.Line, false
	}
	return n.Value, n.Line, true
}

// str sets *dst to key's value when it is set and not empty: an empty
// value (or an unset ${VAR}) keeps the default.
func (p *parser) str(f fields, key string, dst *string) {
	if v, _, ok := p.text(f, key); ok && v != "" {
		*dst = v
	}
}

func (p *parser) duration(f fields, key string, dst *time.Duration) {
	v, line, ok := p.text(f, key)
	if !ok || v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.errorf(line, keyPath(f.path, key), `%q is not a duration (want e.g. "30s", "10m" or "1h30m")`, v)
		return
	}
	*dst = d
}

// boolean sets *dst to key's value, true or false in any case (YAML 1.2's
// core schema), when it is set and not empty: an empty value (or an unset
// ${VAR}) leaves *dst nil. meaning says what each value does.
func (p *parser) boolean(f fields, key, meaning string, dst **bool) {
	v, line, ok := p.text(f, key)
	if !ok || v == "" {
		return
	}
	var b bool
	switch {
	case strings.EqualFold(v, "true"):
		b = true
	case strings.EqualFold(v, "false"):
	default:
		p.errorf(line, keyPath(f.path, key), "%q is not true or false (%s)", v, meaning)
		return
	}
	*dst = &b
}

func (p *parser) integer(f fields, key, example string, dst *int64) bool {
	v, line, ok := p.text(f, key)
	if !ok || v == "" {
		return false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		p.errorf(line, keyPath(f.path, key), "%q is not a whole number (want e.g. %s)", v, example)
		return false
	}
	*dst = n
	return true
}

// amount parses a decimal from the scalar's text, quoted ("0.15") or bare
// (0.15), never through float64.
func (p *parser) amount(n *yaml.Node, path, example string) (money.Micros, bool) {
	v, line, ok := p.scalar(n, path)
	if !ok {
		return 0, false
	}
	m, err := money.Parse(v)
	if err == nil {
		return m, true
	}
	switch {
	case v == "":
		p.errorf(line, path, "is empty (want a decimal such as %q)", example)
	case errors.Is(err, money.ErrRange):
		p.errorf(line, path, "%q is too large (want a decimal such as %q)", v, example)
	case strings.ContainsAny(v, "eE") && strings.ContainsAny(v, "0123456789"):
		p.errorf(line, path, "%q uses an exponent; write the decimal in full (want e.g. %q)", v, example)
	case decimals(v) > money.Decimals:
		p.errorf(line, path, "%q has more than %d decimals; amounts are counted in millionths of a credit (want e.g. %q)", v, money.Decimals, example)
	default:
		p.errorf(line, path, "%q is not a decimal (want e.g. %q)", v, example)
	}
	return 0, false
}

func decimals(s string) int {
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return 0
	}
	return len(s) - i - 1
}

// keyPath appends key to path. Keys that are not plain words (a dot, a
// slash, a "*") are quoted so the path stays unambiguous.
func keyPath(path, key string) string {
	seg := key
	if !plainKey(key) {
		seg = strconv.Quote(key)
	}
	if path == "" {
		return seg
	}
	return path + "." + seg
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// parentPath drops the last segment of a key path: "a.b[2]" → "a.b",
// `a."x.y"` → "a", "a" → "".
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if strings.HasSuffix(path, `"`) {
		// Find the opening quote of the last segment, skipping escaped ones.
		for i := len(path) - 2; i >= 0; i-- {
			if path[i] == '"' && (i == 0 || path[i-1] != '\\') {
				return strings.TrimSuffix(path[:i], ".")
			}
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}
