package config

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// The keys each mapping accepts, in the order the documentation gives them.
var (
	rootKeys   = []string{"listen", "admin", "store", "customer_header", "max_request_bytes", "request_body_timeout", "shutdown_timeout", "settle_timeout", "max_request_duration", "routes", "stripe", "events", "plans", "default_plan"}
	adminKeys  = []string{"listen", "token"}
	storeKeys  = []string{"redis_url", "path", "hold_ttl", "sweep_interval", "timeout", "leases"}
	leaseKeys  = []string{"enabled", "flush_interval", "ttl", "share"}
	routeKeys  = []string{"path", "api", "upstream", "headers", "max_output_tokens", "stream_usage", "model_from", "server_tools", "prices"}
	stripeKeys = []string{"webhook_secret", "webhook_secrets", "api_key", "api_base", "livemode", "prices", "reconcile_interval", "reconcile_window", "past_due_grace"}
	creditKeys = []string{"credits", "expires", "grace", "priority", "plan"}
)

// billsOutput reports whether api has output tokens the preflight must
// reserve for, which is where max_output_tokens applies.
func billsOutput(api meter.API) bool {
	switch api {
	case meter.OpenAIChat, meter.OpenAIResponses, meter.AnthropicMessages, meter.GoogleGemini, meter.OpenAIImages, meter.OpenAIAudio:
		return true
	}
	return false
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

	store := p.mapping(f.vals["store"].val, "store", "a mapping with redis_url, path, hold_ttl, sweep_interval, timeout and leases", storeKeys)
	p.str(store, "redis_url", &c.Store.RedisURL)
	p.str(store, "path", &c.Store.Path)
	p.duration(store, "hold_ttl", &c.Store.HoldTTL)
	p.duration(store, "sweep_interval", &c.Store.SweepInterval)
	p.duration(store, "timeout", &c.Store.Timeout)
	leases := p.mapping(store.vals["leases"].val, "store.leases", "a mapping with enabled, flush_interval, ttl and share", leaseKeys)
	p.boolean(leases, "enabled", "true lets a replica lease credits of busy customers from Redis, false reserves every request in Redis", &c.Store.Leases.Enabled)
	p.duration(leases, "flush_interval", &c.Store.Leases.FlushInterval)
	p.duration(leases, "ttl", &c.Store.Leases.TTL)
	p.integer(leases, "share", "25 for 25 percent", &c.Store.Leases.Share)

	p.routes(f)
	p.stripe(f.vals["stripe"].val)
	ev, ok := f.vals["events"]
	p.events(ev, ok)
	p.plans(f)
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
	f := p.mapping(n, path, "a route: a mapping with path, api, upstream, headers, max_output_tokens, stream_usage, model_from, server_tools and prices", routeKeys)
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
		r.MaxOutputTokens = meter.DefaultMaxOutputTokens
	}
	r.StreamUsage, _, _ = p.text(f, "stream_usage")
	r.ModelFrom, _, _ = p.text(f, "model_from")
	if kv, ok := f.vals["server_tools"]; ok {
		r.ServerTools = p.serverTools(kv, keyPath(path, "server_tools"), r.API)
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
	p.duration(f, "past_due_grace", &s.PastDueGrace)
	if kv, ok := f.vals["prices"]; ok {
		path := "stripe.prices"
		for _, e := range p.pairs(kv.val, path, `a mapping of Stripe price ids or lookup keys to credits, e.g. {price_123: {credits: "10000"}}`) {
			ep := keyPath(path, e.key)
			p.record(ep, e.kline, e.kcol)
			pf := p.mapping(e.val, ep, `a mapping with credits and/or plan, e.g. {credits: "10000"}`, creditKeys)
			planName, _, _ := p.text(pf, "plan")
			c, ok := pf.vals["credits"]
			if !ok && planName == "" {
				if !p.reported[ep] {
					p.errorf(e.kline, ep, `sets no credits and no plan (want e.g. {credits: "10000"}, {plan: pro}, or both)`)
				}
				continue
			}
			if s.Prices == nil {
				s.Prices = map[string]StripePrice{}
			}
			if !ok {
				s.Prices[e.key] = p.stripeLot(pf, StripePrice{Plan: planName})
				continue
			}
			if m, ok := p.amount(c.val, keyPath(ep, "credits"), "10000"); ok {
				s.Prices[e.key] = p.stripeLot(pf, StripePrice{Credits: m, Plan: planName})
			}
		}
	}
}

// stripeLot reads how the credits of a stripe.prices entry expire and
// burn (expires, grace, priority) into sp; validate checks the values.
func (p *parser) stripeLot(f fields, sp StripePrice) StripePrice {
	if v, line, ok := p.text(f, "expires"); ok && v != "" {
		switch v {
		case "never":
			sp.Expires = stripesync.ExpiresNever
		case "period_end":
			sp.Expires = stripesync.ExpiresPeriodEnd
		default:
			d, err := time.ParseDuration(v)
			if err != nil {
				p.errorf(line, keyPath(f.path, "expires"), `%q is not period_end, never or a duration (want e.g. "720h"; days are written in hours)`, v)
				break
			}
			sp.Expires, sp.ExpiresAfter = stripesync.ExpiresAfter, d
		}
	}
	p.duration(f, "grace", &sp.Grace)
	var prio int64
	if p.integer(f, "priority", "10", &prio) {
		n := int(max(min(prio, 1<<20), -1)) // out of range either way; validate says so
		sp.Priority = &n
	}
	return sp
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
		if !hasTokenRate(&pr.Rates) {
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

// hasTokenRate reports whether r charges for any token.
func hasTokenRate(r *meter.Rates) bool {
	for _, k := range meter.RateKeys() {
		if *r.Rate(k) > 0 {
			return true
		}
	}
	return false
}
