package config

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// Validate reports every problem with c's values at once, joined with
// errors.Join, each a *Problem naming the key path (and, for a Config from
// Load or Parse, the file and line), the bad value and what is allowed. It
// returns nil for a valid Config. Load and Parse call it; call it yourself
// after building or changing a Config in code.
//
// Secrets (tokens, header values, keys, Redis passwords) are never echoed
// in messages.
func (c *Config) Validate() error { return joinProblems(c.check()) }

// checker collects the problems of one Validate run.
type checker struct {
	c        *Config
	problems []*Problem
}

func (k *checker) errorf(path, format string, args ...any) {
	if k.c.skipped(path) {
		return
	}
	line := k.c.line(path)
	k.problems = append(k.problems, &Problem{File: k.c.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...), col: k.c.column(path, line)})
}

// line returns the line of path, or of its nearest ancestor Parse saw.
func (c *Config) line(path string) int {
	for {
		if at, ok := c.pos[path]; ok {
			return at.line
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// column returns the column of path when Parse saw it on line.
func (c *Config) column(path string, line int) int {
	if at, ok := c.pos[path]; ok && at.line == line {
		return at.col
	}
	return 0
}

// skipped reports whether Parse already reported path or one of its
// ancestors, so that one mistake gives one message.
func (c *Config) skipped(path string) bool {
	if len(c.skip) == 0 {
		return false
	}
	for {
		if c.skip[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parentPath(path)
	}
}

func (c *Config) check() []*Problem {
	k := &checker{c: c}
	listen := "listen"
	if c.ListenFromEnv {
		k.address("listen", c.Listen, "$"+EnvListen+" ", "0.0.0.0:8080")
		listen = "listen ($" + EnvListen + ")"
	} else {
		k.address("listen", c.Listen, "", "127.0.0.1:8080")
	}
	k.address("admin.listen", c.Admin.Listen, "", ":9090")
	if sameListener(c.Listen, c.Admin.Listen) {
		k.errorf("admin.listen", "%q uses the same port as %s (%q); the proxy and the admin API need different addresses", c.Admin.Listen, listen, c.Listen)
	}
	k.store()
	k.customerHeader()
	if c.MaxRequestBytes <= 0 {
		k.errorf("max_request_bytes", "%d must be greater than 0 (bytes; the default 33554432 is 32 MiB)", c.MaxRequestBytes)
	}
	k.positive("request_body_timeout", c.RequestBodyTimeout, "30s")
	k.positive("shutdown_timeout", c.ShutdownTimeout, "30s")
	k.positive("settle_timeout", c.SettleTimeout, "1s")
	k.positive("max_request_duration", c.MaxRequestDuration, "30m")
	k.routes()
	k.stripe()
	k.events()
	k.plans()
	return k.problems
}

func (k *checker) positive(path string, d time.Duration, example string) {
	if d <= 0 {
		k.errorf(path, "%q must be greater than 0 (want e.g. %q)", d.String(), example)
	}
}

// address checks a listen address; from names where it came from when
// that is not the key itself (e.g. "$TOLLGATE_LISTEN ").
func (k *checker) address(path, addr, from, example string) {
	if addr == "" {
		k.errorf(path, "is empty (want host:port, e.g. %q)", example)
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		k.errorf(path, "%s%q is not a host:port address (want e.g. %q; an empty host means every interface)", from, addr, example)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" || n > 65535 {
		k.errorf(path, "%s%q has port %q (want a number from 0 to 65535, e.g. %q)", from, addr, port, example)
	}
}

// sameListener reports whether two listen addresses would bind the same
// port on overlapping interfaces. Port 0 (pick a free port) never clashes.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	any := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || any(ha) || any(hb)
}

func (k *checker) store() {
	s := k.c.Store
	if s.RedisURL != "" {
		u, err := url.Parse(s.RedisURL)
		switch {
		case err != nil:
			k.errorf("store.redis_url", "is not a URL (value hidden: it may hold a password); want redis://[:password@]host:6379[/db], rediss://… for TLS or unix:///path/to/redis.sock")
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			k.errorf("store.redis_url", "%q has scheme %q; want redis://[:password@]host:6379[/db], rediss://… for TLS or unix:///path/to/redis.sock", u.Redacted(), u.Scheme)
		case u.Scheme != "unix" && u.Host == "":
			k.errorf("store.redis_url", "%q has no host; want redis://[:password@]host:6379[/db]", u.Redacted())
		case u.Scheme == "unix" && u.Path == "":
			k.errorf("store.redis_url", "%q has no socket path; want unix:///path/to/redis.sock", u.Redacted())
		}
	} else if s.Path == "" {
		k.errorf("store.path", `is empty (want the embedded store's file, e.g. "tollgate.db"), or set store.redis_url`)
	}
	k.positive("store.hold_ttl", s.HoldTTL, "10m")
	k.positive("store.sweep_interval", s.SweepInterval, "1m")
	k.positive("store.timeout", s.Timeout, "500ms")
	l := s.Leases
	if l.FlushInterval < time.Millisecond || l.FlushInterval > ledger.MaxLeaseFlush {
		k.errorf("store.leases.flush_interval", "is %v; want 1ms to %v (charges of a killed replica not yet flushed are lost; DESIGN bounds settlement at 1s)", l.FlushInterval, ledger.MaxLeaseFlush)
	}
	if l.TTL < 2*l.FlushInterval {
		k.errorf("store.leases.ttl", "is %v; want at least twice store.leases.flush_interval, e.g. 10s", l.TTL)
	}
	if l.Share < 1 || l.Share > 100 {
		k.errorf("store.leases.share", "is %d; want a percentage from 1 to 100, e.g. 25", l.Share)
	}
}

// reservedHeaders are headers the proxy itself must control, so neither a
// route nor the customer header may name them.
var reservedHeaders = []string{"Host", "Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", "Connection", "Te", "Trailer", "Upgrade", "Keep-Alive", "Proxy-Connection"}

func isReservedHeader(name string) bool {
	name = http.CanonicalHeaderKey(name)
	for _, h := range reservedHeaders {
		if h == name {
			return true
		}
	}
	return false
}

// validHeaderName reports whether name is an RFC 9110 field name (a token).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v may be sent as a field value: no
// control characters but tab (RFC 9110 section 5.5), so a value cannot
// smuggle a second header.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func (k *checker) customerHeader() {
	h := k.c.CustomerHeader
	switch {
	case h == "":
		k.errorf("customer_header", `is empty (want a header name, e.g. %q)`, DefaultCustomerHeader)
	case !validHeaderName(h):
		k.errorf("customer_header", "%q is not a valid header name (want letters, digits and dashes, e.g. %q)", h, DefaultCustomerHeader)
	case isReservedHeader(h):
		k.errorf("customer_header", "%q is a header the proxy needs intact (want your own name, e.g. %q)", h, DefaultCustomerHeader)
	}
}

func apiList() string {
	names := make([]string, 0, len(meter.APIs()))
	for _, a := range meter.APIs() {
		names = append(names, string(a))
	}
	return strings.Join(names, ", ")
}

func (k *checker) routes() {
	c := k.c
	if len(c.Routes) == 0 {
		k.errorf("routes", "none configured; add at least one route (see config.example.yaml)")
		return
	}
	seen := map[string]int{}
	for i, r := range c.Routes {
		base := indexPath("routes", i)
		path := keyPath(base, "path")
		switch {
		case r.Path == "":
			k.errorf(path, `is empty (want the request path to meter, e.g. "/v1/chat/completions")`)
		case !strings.HasPrefix(r.Path, "/"):
			k.errorf(path, `%q must start with "/" (e.g. "/v1/chat/completions")`, r.Path)
		case strings.ContainsAny(r.Path, "?# \t\r\n"):
			k.errorf(path, `%q must be a plain path, without a query, fragment or spaces (e.g. "/v1/chat/completions")`, r.Path)
		default:
			if j, dup := seen[r.Path]; dup {
				at := ""
				if l := c.line(indexPath("routes", j)); l > 0 {
					at = fmt.Sprintf(" (line %d)", l)
				}
				k.errorf(path, "%q is already routed by routes[%d]%s; each path may appear once", r.Path, j, at)
			} else {
				seen[r.Path] = i
			}
		}
		k.api(keyPath(base, "api"), r.API)
		k.upstream(keyPath(base, "upstream"), r.Upstream)
		k.routeHeaders(keyPath(base, "headers"), r.Headers)
		k.maxOutput(keyPath(base, "max_output_tokens"), r)
		k.routeOptions(base, r)
		k.serverTools(keyPath(base, "server_tools"), r.ServerTools)
		k.prices(keyPath(base, "prices"), r.Prices)
	}
}

func (k *checker) api(path string, api meter.API) {
	switch {
	case api == "":
		k.errorf(path, "is empty (want one of %s)", apiList())
	case !api.Valid():
		k.errorf(path, "%q is not an api tollgate meters (want one of %s)", api, apiList())
	}
}

func (k *checker) upstream(path string, u *url.URL) {
	const example = `"https://api.openai.com"`
	switch {
	case u == nil || *u == (url.URL{}):
		k.errorf(path, "is empty (want the provider's base URL, e.g. %s)", example)
	case u.Scheme != "http" && u.Scheme != "https":
		k.errorf(path, "%q is not an http or https URL (want e.g. %s)", u.Redacted(), example)
	case u.Host == "":
		k.errorf(path, "%q has no host (want e.g. %s)", u.Redacted(), example)
	case u.User != nil:
		k.errorf(path, "%q carries user info; put credentials in the route's headers instead", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		k.errorf(path, "%q has a query or fragment; give the base URL only (e.g. %s)", u.Redacted(), example)
	}
}

func (k *checker) routeHeaders(path string, h http.Header) {
	for _, name := range sortedKeys(h) {
		vals := h[name]
		hp := keyPath(path, name)
		switch {
		case !validHeaderName(name):
			k.errorf(hp, "%q is not a valid header name (want letters, digits and dashes, e.g. \"Authorization\")", name)
		case isReservedHeader(name):
			k.errorf(hp, "the proxy sets %s itself; remove it from the route's headers", name)
		case strings.EqualFold(name, k.c.CustomerHeader):
			k.errorf(hp, "is the customer header, which the proxy removes before forwarding; remove it from the route's headers")
		}
		for _, v := range vals {
			if !validHeaderValue(v) {
				k.errorf(hp, "value holds a line break or another control character (value hidden); check the variable it comes from")
			}
		}
	}
}

func (k *checker) maxOutput(path string, r Route) {
	if !r.API.Valid() {
		return
	}
	switch {
	case !billsOutput(r.API) && r.MaxOutputTokens != 0:
		k.errorf(path, "does not apply to api %s, which bills no output tokens; remove it", r.API)
	case billsOutput(r.API) && r.MaxOutputTokens <= 0:
		k.errorf(path, "%d must be greater than 0 (tokens; default %d)", r.MaxOutputTokens, meter.DefaultMaxOutputTokens)
	}
}

// routeOptions checks stream_usage and model_from.
func (k *checker) routeOptions(base string, r Route) {
	switch path := keyPath(base, "stream_usage"); {
	case r.StreamUsage == "" || !r.API.Valid():
	case r.API != meter.OpenAIChat:
		k.errorf(path, "does not apply to api %s: only openai.chat streams have stream_options; remove it", r.API)
	case r.StreamUsage != StreamUsageForce && r.StreamUsage != StreamUsageLeave:
		k.errorf(path, "%q is not a stream_usage (want %q, the default, or %q for upstreams that reject stream_options)", r.StreamUsage, StreamUsageForce, StreamUsageLeave)
	}
	switch path := keyPath(base, "model_from"); {
	case r.ModelFrom == "" || !r.API.Valid():
	case r.ModelFrom != ModelFromBody && r.ModelFrom != ModelFromDeployment:
		k.errorf(path, "%q is not a model_from (want %q, the default, or %q for Azure OpenAI's /openai/deployments/{deployment}/… paths)", r.ModelFrom, ModelFromBody, ModelFromDeployment)
	case r.ModelFrom == ModelFromDeployment && !strings.HasPrefix(string(r.API), "openai."):
		k.errorf(path, "does not apply to api %s: only Azure OpenAI's openai.* routes name a deployment in the path; remove it", r.API)
	}
}

func (k *checker) stripe() {
	s := k.c.Stripe
	for i, sec := range s.WebhookSecrets {
		if sec == "" || !validHeaderValue(sec) {
			k.errorf(indexPath("stripe.webhook_secrets", i), "is empty or holds control characters (value hidden)")
		}
	}
	if s.APIBase == "" {
		k.errorf("stripe.api_base", "is empty (want %q, or stripe-mock's address in tests)", stripesync.DefaultAPIBase)
	} else if u, err := url.Parse(s.APIBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		shown := "(value hidden)"
		if err == nil {
			shown = strconv.Quote(u.Redacted())
		}
		k.errorf("stripe.api_base", "%s is not an http or https base URL without query (want e.g. %q, or \"http://localhost:12111\" for stripe-mock)", shown, stripesync.DefaultAPIBase)
	}
	k.livemode()
	for _, id := range sortedKeys(s.Prices) {
		pp := keyPath("stripe.prices", id)
		if strings.TrimSpace(id) == "" {
			k.errorf(pp, "the price id is empty (want a Stripe price id such as price_123 or a lookup key)")
			continue
		}
		sp := s.Prices[id]
		if sp.Credits < 0 || (sp.Credits == 0 && sp.Plan == "") {
			k.errorf(keyPath(pp, "credits"), `%q must be greater than 0 (credits one unit buys, e.g. "10000")`, sp.Credits.Decimal())
		}
		if sp.Expires == stripesync.ExpiresAfter && sp.ExpiresAfter <= 0 {
			k.errorf(keyPath(pp, "expires"), `%q must be a positive duration (want e.g. "720h"), period_end or never`, sp.ExpiresAfter.String())
		}
		switch {
		case sp.Grace < 0:
			k.errorf(keyPath(pp, "grace"), `%q is negative (want e.g. "72h", or 0)`, sp.Grace.String())
		case sp.Grace > 0 && (sp.Expires == stripesync.ExpiresNever || sp.Expires == stripesync.ExpiresAfter):
			k.errorf(keyPath(pp, "grace"), "is added to the end of an invoice line's period, but these credits do not expire at it; remove grace or set expires: period_end")
		}
		if sp.Priority != nil && (*sp.Priority < 0 || *sp.Priority > ledger.MaxPriority) {
			k.errorf(keyPath(pp, "priority"), `"%d" is out of range (want 0, spent first, to %d; unset means %d)`, *sp.Priority, ledger.MaxPriority, ledger.DefaultPriority)
		}
	}
	if s.ReconcileInterval < 0 {
		k.errorf("stripe.reconcile_interval", `%q is negative (want e.g. "1h", or 0 to disable the periodic run)`, s.ReconcileInterval.String())
	}
	switch {
	case s.ReconcileWindow <= 0:
		k.errorf("stripe.reconcile_window", `%q must be greater than 0 (want e.g. "72h")`, s.ReconcileWindow.String())
	case s.ReconcileWindow > stripesync.MaxReconcileWindow:
		k.errorf("stripe.reconcile_window", `%q is longer than 720h: Stripe keeps events for 30 days (want e.g. "72h")`, s.ReconcileWindow.String())
	}
}

// livemode checks stripe.livemode: required once tollgate receives or
// fetches Stripe events, and of the same mode as the API key. Stripe's
// key prefixes say their mode (https://docs.stripe.com/keys): sk_test_,
// rk_test_ and sk_live_, rk_live_.
func (k *checker) livemode() {
	s := k.c.Stripe
	if s.Livemode == nil {
		if len(s.WebhookSecrets) > 0 || s.APIKey != "" {
			k.errorf("stripe.livemode", "is not set; set it to true to apply live-mode Stripe events or false for test mode (events of the other mode are acknowledged and ignored); it is required with stripe.webhook_secret or stripe.api_key")
		}
		return
	}
	for _, prefix := range []string{"sk_test_", "rk_test_", "sk_live_", "rk_live_"} {
		if !strings.HasPrefix(s.APIKey, prefix) {
			continue
		}
		keyLive := strings.HasSuffix(prefix, "_live_")
		if keyLive == *s.Livemode {
			return
		}
		mode, want, other := "test", "live-mode key (sk_live_… or rk_live_…)", "false"
		if keyLive {
			mode, want, other = "live", "test-mode key (sk_test_… or rk_test_…)", "true"
		}
		k.errorf("stripe.api_key", "is a %s-mode key (%s…) but stripe.livemode is %t; use a %s, or set stripe.livemode to %s", mode, prefix, *s.Livemode, want, other)
		return
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
