package config

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
)

// The keys each mapping accepts, in the order the documentation gives them.
var (
	rootKeys   = []string{"listen", "admin", "store", "customer_header", "max_request_bytes", "request_body_timeout", "shutdown_timeout", "settle_timeout", "max_request_duration", "routes", "stripe"}
	adminKeys  = []string{"listen", "token"}
	storeKeys  = []string{"redis_url", "path", "hold_ttl", "sweep_interval", "timeout"}
	routeKeys  = []string{"path", "api", "upstream", "headers", "max_output_tokens", "prices"}
	priceKeys  = []string{"input", "cached_input", "cache_write_input", "output", "per_request", "per_image", "per_minute"}
	stripeKeys = []string{"webhook_secret", "webhook_secrets", "api_key", "api_base", "livemode", "prices", "reconcile_interval", "reconcile_window"}
	creditKeys = []string{"credits"}
)

// PriceKeys lists the YAML price keys that apply to api, in documentation
// order; for an unknown api, every price key. A route's model may set only
// these: a rate the meter can never apply is a mistake worth reporting,
// not a silent no-op.
func PriceKeys(api meter.API) []string {
	switch api {
	case meter.OpenAIChat, meter.OpenAIResponses, meter.AnthropicMessages:
		return []string{"input", "cached_input", "cache_write_input", "output", "per_request"}
	case meter.OpenAIEmbeddings:
		return []string{"input", "per_request"}
	case meter.OpenAIImages:
		// gpt-image-1 reports token usage (text and image input, cached
		// input, image output); dall-e-2/3 are priced per image.
		return []string{"input", "cached_input", "output", "per_request", "per_image"}
	case meter.OpenAIAudio:
		// whisper-1 is priced per minute; gpt-4o-transcribe and the TTS
		// models report token usage.
		return []string{"input", "output", "per_request", "per_minute"}
	case meter.Flat:
		return []string{"per_request"}
	}
	return slices.Clone(priceKeys)
}

// billsOutput reports whether api has output tokens the preflight must
// reserve for, which is where max_output_tokens applies.
func billsOutput(api meter.API) bool {
	switch api {
	case meter.OpenAIChat, meter.OpenAIResponses, meter.AnthropicMessages, meter.OpenAIImages, meter.OpenAIAudio:
		return true
	}
	return false
}

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

func (p *parser) root(n *yaml.Node) {
	c := p.cfg
	f := p.mapping(n, "", "a mapping of keys such as listen, routes and stripe", rootKeys)
	p.str(f, "listen", &c.Listen)
	p.str(f, "customer_header", &c.CustomerHeader)
	p.integer(f, "max_request_bytes", "33554432 for 32 MiB", &c.MaxRequestBytes)
	p.duration(f, "request_body_timeout", &c.RequestBodyTimeout)
	p.duration(f, "shutdown_timeout", &c.ShutdownTimeout)
	p.duration(f, "settle_timeout", &c.SettleTimeout)
	p.duration(f, "max_request_duration", &c.MaxRequestDuration)

	admin := p.mapping(f.vals["admin"].val, "admin", "a mapping with listen and token", adminKeys)
	p.str(admin, "listen", &c.Admin.Listen)
	p.str(admin, "token", &c.Admin.Token)

	store := p.mapping(f.vals["store"].val, "store", "a mapping with redis_url, path, hold_ttl, sweep_interval and timeout", storeKeys)
	p.str(store, "redis_url", &c.Store.RedisURL)
	p.str(store, "path", &c.Store.Path)
	p.duration(store, "hold_ttl", &c.Store.HoldTTL)
	p.duration(store, "sweep_interval", &c.Store.SweepInterval)
	p.duration(store, "timeout", &c.Store.Timeout)

	p.routes(f)
	p.stripe(f.vals["stripe"].val)
}

func (p *parser) routes(f fields) {
	kv, ok := f.vals["routes"]
	if !ok {
		return
	}
	n := p.resolve(kv.val)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "routes", "want a list of routes (each starting with \"- path: …\"), got %s", kindName(n))
		return
	}
	for i, item := range n.Content {
		path := indexPath("routes", i)
		if r := p.resolve(item); r != nil {
			p.record(path, r.Line, r.Column)
		}
		p.cfg.Routes = append(p.cfg.Routes, p.route(item, path))
	}
}

func (p *parser) route(n *yaml.Node, path string) Route {
	var r Route
	f := p.mapping(n, path, "a route: a mapping with path, api, upstream, headers, max_output_tokens and prices", routeKeys)
	r.Path, _, _ = p.text(f, "path")
	api, _, _ := p.text(f, "api")
	r.API = meter.API(api)
	if v, line, ok := p.text(f, "upstream"); ok && v != "" {
		u, err := url.Parse(v)
		if err != nil {
			p.errorf(line, keyPath(path, "upstream"), "%q is not a URL (want e.g. \"https://api.openai.com\")", v)
		} else {
			r.Upstream = u
		}
	}
	if kv, ok := f.vals["headers"]; ok {
		r.Headers = p.headers(kv.val, keyPath(path, "headers"))
	}
	if !p.integer(f, "max_output_tokens", "4096", &r.MaxOutputTokens) && billsOutput(r.API) {
		r.MaxOutputTokens = DefaultMaxOutputTokens
	}
	if kv, ok := f.vals["prices"]; ok {
		r.Prices = p.prices(kv.val, keyPath(path, "prices"), r.API)
	}
	return r
}

func (p *parser) headers(n *yaml.Node, path string) http.Header {
	h := http.Header{}
	first := map[string]string{}
	for _, kv := range p.pairs(n, path, `a mapping of header names to values, e.g. {Authorization: "Bearer ${OPENAI_API_KEY}"}`) {
		hp := keyPath(path, kv.key)
		p.record(hp, kv.kline, kv.kcol)
		v, _, ok := p.scalar(kv.val, hp)
		if !ok {
			continue
		}
		canon := http.CanonicalHeaderKey(kv.key)
		if prev, dup := first[canon]; dup {
			p.errorf(kv.kline, hp, "names the same header as %s (header names ignore case); keep one", prev)
			continue
		}
		first[canon] = kv.key
		h.Set(canon, v)
		// Validate names headers in canonical form; point it here too.
		p.record(keyPath(path, canon), kv.kline, kv.kcol)
	}
	return h
}

func (p *parser) prices(n *yaml.Node, path string, api meter.API) meter.Prices {
	prices := meter.Prices{}
	for _, kv := range p.pairs(n, path, `a mapping of model names to prices, e.g. {gpt-4o-mini: {input: "0.15", output: "0.60"}}`) {
		mp := keyPath(path, kv.key)
		p.record(mp, kv.kline, kv.kcol)
		prices[kv.key] = p.price(kv, mp, api)
	}
	return prices
}

func (p *parser) price(kv pair, path string, api meter.API) meter.Price {
	var pr meter.Price
	f := p.mapping(kv.val, path, `a mapping of price keys, e.g. {input: "0.15", output: "0.60"}`, priceKeys)
	allowed := PriceKeys(api)
	if f.n == 0 && !p.reported[path] {
		p.errorf(kv.kline, path, "sets no price; give at least one of %s", strings.Join(allowed, ", "))
		return pr
	}
	set := func(key string, dst *money.Micros, example string) bool {
		v, ok := f.vals[key]
		if !ok {
			return false
		}
		kp := keyPath(path, key)
		if api.Valid() && !slices.Contains(allowed, key) {
			p.errorf(v.kline, kp, "is not a price of api %s; its prices are %s", api, strings.Join(allowed, ", "))
			return true
		}
		if m, ok := p.amount(v.val, kp, example); ok {
			*dst = m
		}
		return true
	}
	set("input", &pr.Input, "0.15")
	cached := set("cached_input", &pr.CachedInput, "0.075")
	cacheWrite := set("cache_write_input", &pr.CacheWriteInput, "3.75")
	set("output", &pr.Output, "0.60")
	set("per_request", &pr.PerRequest, "0.001")
	set("per_minute", &pr.PerMinute, "0.006")
	if !cached {
		pr.CachedInput = pr.Input
	}
	if !cacheWrite {
		pr.CacheWriteInput = pr.Input
	}
	if v, ok := f.vals["per_image"]; ok {
		kp := keyPath(path, "per_image")
		if api.Valid() && !slices.Contains(allowed, "per_image") {
			p.errorf(v.kline, kp, "is not a price of api %s; its prices are %s", api, strings.Join(allowed, ", "))
		} else {
			pr.PerImage = p.perImage(v, kp)
		}
	}
	return pr
}

func (p *parser) perImage(kv pair, path string) map[string]money.Micros {
	m := map[string]money.Micros{}
	entries := p.pairs(kv.val, path, `a mapping of sizes to prices, e.g. {"1024x1024": "0.04", "1024x1024/hd": "0.08"}`)
	if len(entries) == 0 && !p.reported[path] {
		p.errorf(kv.kline, path, `is empty; give prices by size, e.g. {"1024x1024": "0.04"}`)
	}
	for _, e := range entries {
		ep := keyPath(path, e.key)
		p.record(ep, e.kline, e.kcol)
		if v, ok := p.amount(e.val, ep, "0.04"); ok {
			m[e.key] = v
		}
	}
	return m
}

func (p *parser) stripe(n *yaml.Node) {
	s := &p.cfg.Stripe
	f := p.mapping(n, "stripe", "a mapping with webhook_secret, api_key, prices and the other stripe keys", stripeKeys)
	var secrets, paths []string
	if v, _, ok := p.text(f, "webhook_secret"); ok {
		secrets, paths = append(secrets, v), append(paths, "stripe.webhook_secret")
	}
	if kv, ok := f.vals["webhook_secrets"]; ok {
		path := "stripe.webhook_secrets"
		switch l := p.resolve(kv.val); {
		case isNull(l):
		case l.Kind != yaml.SequenceNode:
			p.errorf(l.Line, path, `want a list of secrets, e.g. ["${STRIPE_WEBHOOK_SECRET}", "${STRIPE_WEBHOOK_SECRET_OLD}"], got %s`, kindName(l))
		default:
			for i, item := range l.Content {
				if v, _, ok := p.scalar(item, indexPath(path, i)); ok {
					secrets, paths = append(secrets, v), append(paths, indexPath(path, i))
				}
			}
		}
	}
	for i, sec := range secrets {
		if sec != "" && !slices.Contains(s.WebhookSecrets, sec) {
			s.WebhookSecrets = append(s.WebhookSecrets, sec)
			p.secretPaths = append(p.secretPaths, paths[i])
		}
	}
	p.str(f, "api_key", &s.APIKey)
	p.str(f, "api_base", &s.APIBase)
	s.APIBase = strings.TrimRight(s.APIBase, "/")
	p.boolean(f, "livemode", "true applies live-mode Stripe events, false test-mode ones", &s.Livemode)
	p.duration(f, "reconcile_interval", &s.ReconcileInterval)
	p.duration(f, "reconcile_window", &s.ReconcileWindow)
	if kv, ok := f.vals["prices"]; ok {
		path := "stripe.prices"
		for _, e := range p.pairs(kv.val, path, `a mapping of Stripe price ids or lookup keys to credits, e.g. {price_123: {credits: "10000"}}`) {
			ep := keyPath(path, e.key)
			p.record(ep, e.kline, e.kcol)
			pf := p.mapping(e.val, ep, `a mapping with credits, e.g. {credits: "10000"}`, creditKeys)
			c, ok := pf.vals["credits"]
			if !ok {
				if !p.reported[ep] {
					p.errorf(e.kline, ep, `sets no credits (want e.g. {credits: "10000"})`)
				}
				continue
			}
			if s.Prices == nil {
				s.Prices = map[string]StripePrice{}
			}
			if m, ok := p.amount(c.val, keyPath(ep, "credits"), "10000"); ok {
				s.Prices[e.key] = StripePrice{Credits: m}
			}
		}
	}
}

// warnings reports settings that work but are probably not what the
// operator wants. Secrets are never echoed.
func (p *parser) warnings() {
	c := p.cfg
	switch {
	case c.Admin.Token == "":
		p.warnf(c.line("admin.token"), "admin.token", "is empty: the admin API (/v1/*) refuses every call until it is set; the Stripe webhook, probes and metrics still work")
	case len(c.Admin.Token) < 16:
		p.warnf(c.line("admin.token"), "admin.token", "is shorter than 16 characters; use a long random value, e.g. from `openssl rand -hex 32`")
	}
	for i, r := range c.Routes {
		if r.Upstream != nil && strings.HasSuffix(strings.TrimRight(r.Upstream.Path, "/"), "/v1") && strings.HasPrefix(r.Path, "/v1/") {
			path := keyPath(indexPath("routes", i), "upstream")
			p.warnf(c.line(path), path, "%q ends in /v1 and the route path %q starts with /v1/, so requests go to …/v1/v1/…; give the provider's base address, e.g. \"https://api.openai.com\"", r.Upstream.Redacted(), r.Path)
		}
		p.unitWarnings(indexPath("routes", i), r)
	}
	s := c.Stripe
	if p.present["stripe"] && len(s.WebhookSecrets) == 0 {
		p.warnf(c.line("stripe.webhook_secret"), "stripe.webhook_secret", "is empty: POST /webhooks/stripe refuses every event until it is set")
	}
	for i, sec := range s.WebhookSecrets {
		if !strings.HasPrefix(sec, "whsec_") {
			path := p.secretPaths[i]
			p.warnf(c.line(path), path, "does not start with whsec_ as Stripe signing secrets do (Dashboard → Developers → Webhooks → Signing secret)")
		}
	}
	if s.APIKey != "" && !strings.HasPrefix(s.APIKey, "sk_") && !strings.HasPrefix(s.APIKey, "rk_") {
		p.warnf(c.line("stripe.api_key"), "stripe.api_key", "does not start with sk_ or rk_ as Stripe secret and restricted keys do")
	}
	if len(s.Prices) > 0 && s.APIKey == "" {
		p.warnf(c.line("stripe.prices"), "stripe.prices", "is set but stripe.api_key is empty, so checkout line items cannot be fetched: only sessions with metadata.tollgate_credits are credited")
	}
}

// unitWarnings reports the prices of an images or audio route that charge
// tokens but have no rate for the unit a model may report instead. Such a
// price is legal: a response that reports tokens is charged by them, and
// one that reports only images or a duration (DALL·E, whisper-1) is
// charged the meter's estimate of its tokens (meter.Usage
// FallbackInputTokens), never nothing. The operator should know that the
// second kind is an estimate, and how to price it exactly.
func (p *parser) unitWarnings(route string, r Route) {
	if r.API != meter.OpenAIImages && r.API != meter.OpenAIAudio {
		return
	}
	for _, model := range sortedKeys(r.Prices) {
		pr := r.Prices[model]
		if pr.Input <= 0 && pr.CachedInput <= 0 && pr.CacheWriteInput <= 0 && pr.Output <= 0 {
			continue
		}
		path := keyPath(keyPath(route, "prices"), model)
		switch {
		case r.API == meter.OpenAIImages && len(pr.PerImage) == 0:
			p.warnf(p.cfg.line(path), path, `sets token rates but no per_image: an image response without token usage (DALL·E models never report any) is charged tollgate's estimate of its tokens, e.g. 4160 output tokens for a high-quality 1024x1024 image; add per_image (e.g. {"1024x1024": "0.04"}) to charge such images by size instead`)
		case r.API == meter.OpenAIAudio && pr.PerMinute <= 0:
			p.warnf(p.cfg.line(path), path, `sets token rates but no per_minute: a transcription that reports a duration but no tokens (whisper-1) is charged tollgate's estimate of its tokens, %d audio tokens a minute plus its text; add per_minute (e.g. "0.006") to charge it by the minute instead`, meter.AudioTokensPerMinute)
		}
	}
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
