package config

import (
	"net/url"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-dev/tollgate/money"
)

// Events configures outbound events (YAML "events"; DESIGN "Events
// (outbound)"). Without an events: section tollgate writes and sends no
// events, and GET /v1/events answers 400 not_configured.
type Events struct {
	// Enabled reports that the config has an events: section.
	Enabled bool
	// URL receives every event as a signed POST (YAML "events.url"), at
	// least once, retried with backoff for up to 72 hours. Empty: events
	// are kept for GET /v1/events and `tollgate events` only.
	URL string
	// Secret signs the deliveries (YAML "events.secret"): the
	// Tollgate-Signature header is t=UNIX,v1=hex(HMAC-SHA256(secret,
	// "UNIX.body")). Required with URL.
	Secret string
	// LowBalance are the thresholds of balance.low, decimal credits (YAML
	// "events.low_balance", e.g. ["10", "1"]), each positive. None: no
	// balance.low events.
	LowBalance []money.Micros
}

var eventsKeys = []string{"url", "secret", "low_balance"}

// events parses the events: section.
func (p *parser) events(kv pair, present bool) {
	if !present {
		return
	}
	e := &p.cfg.Events
	e.Enabled = true
	f := p.mapping(kv.val, "events", "a mapping with url, secret and low_balance", eventsKeys)
	p.str(f, "url", &e.URL)
	p.str(f, "secret", &e.Secret)
	lb, ok := f.vals["low_balance"]
	if !ok {
		return
	}
	path := "events.low_balance"
	switch l := p.resolve(lb.val); {
	case isNull(l):
	case l.Kind != yaml.SequenceNode:
		p.errorf(l.Line, path, `want a list of decimal credits, e.g. ["10", "1"], got %s`, kindName(l))
	default:
		for i, item := range l.Content {
			ip := indexPath(path, i)
			p.record(ip, item.Line, item.Column)
			if m, ok := p.amount(item, ip, "10"); ok {
				e.LowBalance = append(e.LowBalance, m)
			}
		}
	}
}

// events checks the events: section.
func (k *checker) events() {
	e := k.c.Events
	if !e.Enabled {
		return
	}
	if e.URL != "" {
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			k.errorf("events.url", "%q is not an http or https URL (want e.g. \"https://app.example.com/webhooks/tollgate\")", e.URL)
		}
		if e.Secret == "" {
			k.errorf("events.secret", "is empty; deliveries to events.url must be signed: set it to a long random value, e.g. from `openssl rand -hex 32`, and verify Tollgate-Signature with it")
		}
	}
	for i, t := range e.LowBalance {
		if t <= 0 {
			k.errorf(indexPath("events.low_balance", i), "%q is not positive (want a threshold such as \"10\")", t.String())
		}
	}
}
