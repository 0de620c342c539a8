// Package config loads tollgate's YAML configuration: it expands ${VAR}
// references, decodes strictly (an unknown key is an error naming its line),
// fills defaults, parses every price to micro-credits and reports every
// problem at once, each naming the file, line, key path, bad value and what
// is allowed.
//
// It does not read flags, watch files or act on the configuration: the
// caller (cmd/tollgate) decides when to load and reload, and the proxy,
// ledger and Stripe code apply the values. Parse takes the document and
// the environment as arguments; only Load touches the file system and the
// process environment.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/plan"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// Defaults. Each is documented on the field it fills and in
// config.example.yaml.
const (
	DefaultListen             = "127.0.0.1:8080"
	DefaultAdminListen        = ":9090"
	DefaultStorePath          = "tollgate.db"
	DefaultHoldTTL            = 10 * time.Minute
	DefaultSweepInterval      = time.Minute
	DefaultStoreTimeout       = 500 * time.Millisecond
	DefaultCustomerHeader     = "X-Tollgate-Customer"
	DefaultMaxRequestBytes    = 32 << 20 // 32 MiB
	DefaultRequestBodyTimeout = 30 * time.Second
	DefaultShutdownTimeout    = 30 * time.Second
	DefaultSettleTimeout      = time.Second
	DefaultMaxRequestDuration = 30 * time.Minute
	DefaultReconcileInterval  = time.Hour
	DefaultReconcileWindow    = 72 * time.Hour
)

// EnvListen is the environment variable that, set and not empty, overrides
// the file's listen (Config.Listen). tollgate's container image sets it to
// 0.0.0.0:8080: inside a container 127.0.0.1 is the container's own, so a
// published port would never reach a proxy on loopback, whatever the
// mounted file says. A Kubernetes sidecar sets it back to 127.0.0.1:8080,
// so that only the app in its pod can spend credits.
const EnvListen = "TOLLGATE_LISTEN"

// The values of a route's stream_usage (see Route.StreamUsage).
const (
	StreamUsageForce = "force"
	StreamUsageLeave = "leave"
)

// The values of a route's model_from (see Route.ModelFrom).
const (
	ModelFromBody       = "body"
	ModelFromDeployment = "deployment"
)

// ModelFallback is the prices key that prices every model a route does not
// list by name.
const ModelFallback = "*"

// Config is a validated tollgate configuration. Load and Parse fill every
// default, so a zero field means what its comment says zero means.
//
// Load and Parse return a new Config each time and never change it
// afterwards, so one may be shared by goroutines and swapped whole on a
// reload. A Config holds secrets (admin.token, route headers, Stripe
// keys): never log or print it whole.
type Config struct {
	// Listen is the host:port of the app-facing proxy listener (YAML
	// "listen"). Default "127.0.0.1:8080": only processes on the same host
	// (or pod) can reach it, which is what a sidecar wants. Port 0 picks a
	// free port. $TOLLGATE_LISTEN, when set, overrides it (EnvListen).
	Listen string
	// ListenFromEnv reports that Listen is $TOLLGATE_LISTEN's, not the
	// file's or the default.
	ListenFromEnv bool
	// Admin configures the admin listener (YAML "admin").
	Admin Admin
	// Events configures outbound events (YAML "events", events.go).
	Events Events
	// Store chooses where balances live (YAML "store").
	Store Store
	// CustomerHeader names the request header that carries the end
	// customer's id (YAML "customer_header"). Default
	// "X-Tollgate-Customer". It is removed before the request is forwarded.
	CustomerHeader string
	// MaxRequestBytes is the largest request body the proxy reads, in bytes
	// (YAML "max_request_bytes"); a larger one is refused with 413
	// request_too_large. Default 33554432 (32 MiB). Must be > 0.
	MaxRequestBytes int64
	// RequestBodyTimeout is how long the proxy waits for the next bytes of
	// a request body (YAML "request_body_timeout"); a body that stops
	// arriving for that long is refused with 408 request_timeout and its
	// connection closed, before any hold is taken. It bounds the pause
	// between reads, not the whole upload, like nginx's
	// client_body_timeout: a large upload that keeps moving is never cut.
	// Default 30s. Must be > 0.
	RequestBodyTimeout time.Duration
	// ShutdownTimeout is how long a SIGTERM or SIGINT waits for in-flight
	// requests and streams to finish and settle before they are cut (YAML
	// "shutdown_timeout"). Default 30s. Must be > 0.
	ShutdownTimeout time.Duration
	// SettleTimeout bounds each attempt to settle a request after the
	// client has its last byte, and each release and hold renewal (YAML
	// "settle_timeout"). A settlement starts at the last byte and commits
	// in milliseconds on a healthy store, so it is committed within this
	// of the last byte (DESIGN: within 1 s) or the attempt is abandoned
	// and retried with backoff (proxy.DefaultSettleRetryFor); settling is
	// idempotent. Default 1s. Must be > 0.
	SettleTimeout time.Duration
	// MaxRequestDuration is the longest a proxied request may stay open
	// (YAML "max_request_duration"), from its reservation to the last
	// byte of its response. A request still open then is cut, like a
	// stream the upstream dropped, and charged for what it produced; one
	// still waiting for the upstream's answer gets 504 request_timeout.
	// Meanwhile tollgate renews the request's hold every store.hold_ttl/3,
	// so the hold lasts as long as the request. Default 30m. Must be > 0.
	MaxRequestDuration time.Duration
	// Routes are the metered endpoints, in file order (YAML "routes"). At
	// least one is required; a request no route matches is refused with 404
	// route_not_found, never passed through unmetered.
	Routes []Route
	// Stripe configures webhooks, API calls and reconciliation (YAML
	// "stripe"). Its zero value disables all of them.
	Stripe Stripe
	// Plans are what customers may use, by plan name (YAML "plans"; see
	// Plan). Nil means no plans: every customer may use every route and
	// model, as before plans existed.
	Plans map[string]Plan
	// DefaultPlan is the plan of a customer without a subscription that
	// gives one and without an override (YAML "default_plan"). Required
	// with Plans; it names one of them.
	DefaultPlan string

	// Warnings are problems that do not stop tollgate from starting, such
	// as an unset ${VAR}, in file order. Callers should log or print them.
	Warnings []Warning

	file string              // the name Load was given, for messages
	pos  map[string]position // key path → where Parse found it
	skip map[string]bool     // key paths Parse already reported
}

// position is a place in the file, 1-based.
type position struct{ line, col int }

// Admin configures the admin listener: the admin API, the Stripe webhook,
// probes and metrics.
type Admin struct {
	// Listen is the admin listener's host:port (YAML "admin.listen").
	// Default ":9090" (every interface, so that Stripe and the cluster's
	// probes can reach it). It must differ from Config.Listen.
	Listen string
	// Token is the bearer token the admin API (/v1/*) requires (YAML
	// "admin.token"). Empty means the admin API refuses every call, saying
	// to set it; the webhook, probes and metrics need no token and keep
	// working. Use a long random value (openssl rand -hex 32).
	Token string
}

// Store chooses where balances, holds and ledger entries live.
type Store struct {
	// RedisURL selects the Redis store (YAML "store.redis_url"), shared by
	// every replica, e.g. "redis://:password@redis:6379/0" or "rediss://…"
	// for TLS. Empty means the embedded store in Path, for one process.
	RedisURL string
	// Path is the embedded store's file (YAML "store.path"), used only when
	// RedisURL is empty. Default "tollgate.db", relative to the working
	// directory.
	Path string
	// HoldTTL is how long a reservation lives before it stops counting
	// against the balance (YAML "store.hold_ttl"), so a crashed replica
	// never locks credits forever. While its request is open, tollgate
	// renews a hold every HoldTTL/3, so requests may run longer (up to
	// max_request_duration); a shorter HoldTTL frees a crashed replica's
	// holds sooner at the cost of more renewals. Default 10m. Must be > 0.
	HoldTTL time.Duration
	// SweepInterval is how often expired holds are removed from storage
	// (YAML "store.sweep_interval"). Expired holds stop counting at once
	// whatever this is; sweeping only reclaims space. Default 1m. Must be > 0.
	SweepInterval time.Duration
	// Timeout bounds each credit store call a request waits for before it
	// is forwarded (the reservation), and each store call of /readyz (YAML
	// "store.timeout"). A store that does not answer in time is treated as
	// unavailable: the request is refused with 503 billing_unavailable
	// (nothing forwarded, nothing charged) instead of hanging. Default
	// 500ms, far above a healthy store's milliseconds and well below a
	// client's patience; raise it only for a store that is slow when
	// healthy. Settlements have their own bound, settle_timeout, and are
	// retried. Must be > 0.
	Timeout time.Duration
	// Leases configures credit leases on Redis (YAML "store.leases"); the
	// embedded store ignores it.
	Leases Leases
}

// Leases configures credit leases (ledger.LeaseStore): a replica that
// serves a customer often reserves a slice of the customer's credits as
// one hold of its own and takes that customer's request holds from it in
// memory, sending the charges to Redis in one script per customer every
// FlushInterval.
type Leases struct {
	// Enabled turns leases on (YAML "store.leases.enabled"). Default
	// true with store.redis_url.
	Enabled *bool
	// FlushInterval is how often a replica sends its leased charges to
	// Redis and renews its leases (YAML "store.leases.flush_interval"):
	// a replica killed with kill -9 loses at most this much of
	// settlements. Default 50ms; 1ms to 100ms.
	FlushInterval time.Duration
	// TTL is how long a lease lives without a renewal (YAML
	// "store.leases.ttl"): the unused credits of a replica that died stay
	// out of reach this long. Default 10s.
	TTL time.Duration
	// Share is the most of a customer's available credits one lease may
	// take, in percent (YAML "store.leases.share"). Default 25; 1 to 100.
	Share int64
}

// Equal reports whether s and o configure the same store (Leases.Enabled
// compared by value, not by pointer).
func (s Store) Equal(o Store) bool {
	on := s.LeasesOn() == o.LeasesOn()
	s.Leases.Enabled, o.Leases.Enabled = nil, nil
	return on && s == o
}

// LeasesOn reports whether leases are on: with Redis, unless turned off.
func (s Store) LeasesOn() bool {
	return s.RedisURL != "" && (s.Leases.Enabled == nil || *s.Leases.Enabled)
}

// Route is one metered endpoint.
type Route struct {
	// Path is the request path this route serves (YAML "path"). It starts
	// with "/" and matches exactly, or, when it ends with "/", as a prefix
	// of every path below it; the longest match wins, as with
	// http.ServeMux.
	Path string
	// API is the wire format of requests and responses (YAML "api"), one of
	// meter.APIs().
	API meter.API
	// Upstream is the absolute http or https URL requests are forwarded to
	// (YAML "upstream"), e.g. https://api.openai.com. The request path is
	// appended to its path. It has no query, fragment or user info.
	Upstream *url.URL
	// Headers are set on every forwarded request (YAML "headers"), usually
	// the provider credential from the environment, e.g.
	// {Authorization: "Bearer ${OPENAI_API_KEY}"}. When a route sets any,
	// the client's own credential headers are dropped first. Names are in
	// canonical form; each has one value.
	Headers http.Header
	// MaxOutputTokens is the most output a request may ask for (YAML
	// "max_output_tokens"), a ceiling the preflight reserves for and the
	// proxy enforces upstream: a request's own cap above it, or a request
	// without one, is sent with this cap in the API's own field (see
	// meter.Request.Rewrite). Default meter.DefaultMaxOutputTokens (4096)
	// on APIs that bill output tokens (openai.chat, openai.responses,
	// anthropic.messages, google.gemini, openai.images, openai.audio); it
	// does not apply to openai.embeddings and flat, where it is 0. Must
	// be > 0 where it applies.
	MaxOutputTokens int64
	// StreamUsage says whether an openai.chat stream is sent upstream
	// with stream_options.include_usage forced on (YAML "stream_usage"):
	// "force", the default, sets it so that the stream ends with its
	// usage, also over a client's false; "leave" sends the client's
	// stream_options as they are, for OpenAI-compatible upstreams that
	// reject the field. Under "leave" a stream is charged by the usage
	// it reports anyway (a usage object in any chunk, or Groq's
	// x_groq.usage), and otherwise by tollgate's estimate from the
	// streamed text, recorded as estimated. openai.chat routes only.
	StreamUsage string
	// ModelFrom says where the model a request is priced by comes from
	// (YAML "model_from"): "body", the default, its "model" field; or
	// "deployment", the Azure OpenAI deployment its path names
	// (/openai/deployments/{deployment}/chat/completions), which the
	// prices are then keyed by, whatever the body says. openai.*
	// routes only; a request whose path names no deployment is refused
	// (400 invalid_request). google.gemini routes always price the model
	// their path names.
	ModelFrom string
	// ServerTools are the preflight's allowances for server-side tool
	// calls (YAML "server_tools": kind → {max_uses, input_tokens}), on
	// anthropic.messages and openai.responses routes: how many calls a
	// tool that sets no max_uses of its own is held for, and how many
	// input tokens one call's result may add. A kind left out, or a key
	// left out of one, takes meter.DefaultToolAllowance's (5 calls; 25,000
	// tokens for a web search). Both must be > 0.
	ServerTools meter.ServerTools
	// Prices maps model names to prices (YAML "prices"). The key "*"
	// prices every model not listed; without it an unlisted model is
	// refused with 400 model_not_priced. A rate the file leaves out
	// takes its meter.RateDefault (cached_input and cache_write_input
	// are input's, cache_write_input_1h is cache_write_input's, and so
	// on), in the model's table and in each tier and variant.
	Prices meter.Prices
}

// Stripe configures the Stripe integration.
type Stripe struct {
	// WebhookSecrets are the endpoint signing secrets ("whsec_…") a webhook
	// may be signed with: YAML "stripe.webhook_secret" followed by
	// "stripe.webhook_secrets", empty and duplicate values removed. Several
	// are accepted so a secret can be rotated without downtime. Empty means
	// POST /webhooks/stripe refuses every event.
	WebhookSecrets []string
	// APIKey is the Stripe secret or restricted key (YAML
	// "stripe.api_key"). It enables fetching checkout line items and
	// reconciliation; empty disables both.
	APIKey string
	// APIBase is the Stripe API address (YAML "stripe.api_base"), without a
	// trailing slash. Default stripesync.DefaultAPIBase
	// ("https://api.stripe.com"); point it at stripe-mock in tests.
	APIBase string
	// Livemode is the Stripe mode whose events tollgate applies (YAML
	// "stripe.livemode"): true for live mode, false for test mode. Events
	// of the other mode, from a webhook or a reconciliation, are
	// acknowledged (2xx, so Stripe stops sending them) and ignored with a
	// warning, so test payments never credit customers when test and live
	// secrets are configured together. Nil means unset, which is an error
	// when WebhookSecrets or APIKey is set: the mode is never guessed. An
	// APIKey of the other mode (sk_test_… with true, sk_live_… with
	// false) is an error too.
	Livemode *bool
	// Prices maps a Stripe price id or lookup key to what one unit of it
	// buys and how those credits expire and burn (YAML "stripe.prices").
	// See StripePrice.
	Prices map[string]StripePrice
	// ReconcileInterval is how often serve replays missed Stripe events
	// (YAML "stripe.reconcile_interval"). Default 1h; 0 disables the
	// periodic run (POST /v1/reconcile still works). Only used when APIKey
	// is set. Must be ≥ 0.
	ReconcileInterval time.Duration
	// ReconcileWindow is how far back a periodic reconciliation looks (YAML
	// "stripe.reconcile_window"). Default 72h; at most 720h, the 30 days
	// Stripe keeps events for. Must be > 0.
	ReconcileWindow time.Duration
	// PastDueGrace is how long a past_due subscription keeps its plan
	// before the customer falls to default_plan (YAML
	// "stripe.past_due_grace"), counted from the first event that showed
	// it past_due. Default 72h (plan.DefaultPastDueGrace); 0 drops the
	// plan at once. Must be ≥ 0. Used only with plans.
	PastDueGrace time.Duration
}

// StripePrice is one entry of stripe.prices, what stripesync.Options
// takes (stripesync looks a line's price up by id first, then by lookup
// key):
//
//   - credits (Credits): the credits one unit buys; a line item credits
//     credits × quantity. Required, > 0.
//   - expires (Expires, ExpiresAfter): "period_end" (the end of the
//     invoice line's period), "never", or a duration from the grant such
//     as "720h". Unset: period_end on subscription invoices, never on
//     one-off purchases.
//   - grace (Grace): a duration added to period_end; default 0. Only
//     with expires period_end or unset.
//   - priority (Priority): the lot's place in burn order, 0 (spent
//     first) to 100; unset means 50.
//   - plan (Plan): the plan a subscription to this price puts the
//     customer on (one of plans). With plan, credits may be left out: the
//     price then grants a plan and no credits.
type StripePrice = stripesync.Price

// Default returns a Config with every default filled and no routes, for
// building a configuration in code. It does not pass Validate until it has
// routes.
func Default() *Config {
	return &Config{
		Listen: DefaultListen,
		Admin:  Admin{Listen: DefaultAdminListen},
		Store: Store{Path: DefaultStorePath, HoldTTL: DefaultHoldTTL, SweepInterval: DefaultSweepInterval, Timeout: DefaultStoreTimeout,
			Leases: Leases{FlushInterval: ledger.DefaultLeaseFlush, TTL: ledger.DefaultLeaseTTL, Share: ledger.DefaultLeaseShare}},
		CustomerHeader:     DefaultCustomerHeader,
		MaxRequestBytes:    DefaultMaxRequestBytes,
		RequestBodyTimeout: DefaultRequestBodyTimeout,
		ShutdownTimeout:    DefaultShutdownTimeout,
		SettleTimeout:      DefaultSettleTimeout,
		MaxRequestDuration: DefaultMaxRequestDuration,
		Stripe: Stripe{
			APIBase:           stripesync.DefaultAPIBase,
			ReconcileInterval: DefaultReconcileInterval,
			ReconcileWindow:   DefaultReconcileWindow,
			PastDueGrace:      plan.DefaultPastDueGrace,
		},
	}
}

// maxFileBytes bounds what Parse reads: a configuration is a few kilobytes,
// and a runaway file should not exhaust memory.
const maxFileBytes = 8 << 20

// Load reads the configuration in the file at path, expanding ${VAR} from
// the process environment. Messages name the file as path. See Parse.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(path, f, os.LookupEnv)
	_ = f.Close() // opened for reading: closing cannot lose anything
	return c, err
}

// Parse reads a configuration from r, expanding each ${VAR} in a scalar
// value with env (os.LookupEnv in production; nil means nothing is set),
// and taking listen from env's $TOLLGATE_LISTEN when it is set (EnvListen).
// It fills defaults, parses prices to micro-credits and validates
// everything. Keys are never expanded, and top-level keys starting with
// "x-" are ignored: a place for YAML anchors to reuse with *name or
// "<<: *name", as in Docker Compose.
//
// On an invalid configuration the error is errors.Join of one *Problem per
// problem, in line order. When the document was readable YAML, Parse also
// returns the Config it decoded, so that callers can report its Warnings
// next to the errors; a Config returned with an error must not be used.
func Parse(r io.Reader, env func(string) (string, bool)) (*Config, error) {
	return parse("", r, env)
}

func parse(file string, r io.Reader, env func(string) (string, bool)) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxFileBytes {
		return nil, &Problem{File: file, Message: fmt.Sprintf("is larger than %d bytes; a configuration is a few kilobytes", maxFileBytes)}
	}
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	p := &parser{file: file, env: env, cfg: Default()}
	p.cfg.file = file
	if !p.document(bytes.NewReader(data)) {
		return nil, joinProblems(p.problems)
	}
	c := p.cfg
	if v, ok := env(EnvListen); ok && v != "" {
		c.Listen, c.ListenFromEnv = v, true
	}
	for path := range p.reported {
		c.skip[path] = true
	}
	problems := append(p.problems, c.check()...)
	c.skip = nil
	if len(problems) > 0 {
		return c, joinProblems(problems)
	}
	return c, nil
}

// Problem is one thing wrong with a configuration. Parse, Load and Validate
// return them joined with errors.Join; use errors.As to inspect one.
type Problem struct {
	File    string // the file name given to Load; empty for Parse
	Line    int    // 1-based line in the file; 0 when unknown
	Path    string // the key path, e.g. "routes[0].prices.gpt-4o-mini.input"; empty for the whole file
	Message string // what is wrong and what is allowed

	col int // orders problems on one line
}

// Error formats p as "file:line: path: message", leaving out what is
// unknown ("line 12: …" without a file name).
func (p *Problem) Error() string { return prefix(p.File, p.Line, p.Path) + p.Message }

// Warning is something worth fixing that does not stop tollgate, such as
// an unset ${VAR} or an empty admin.token.
type Warning struct {
	File    string // the file name given to Load; empty for Parse
	Line    int    // 1-based line in the file; 0 when unknown
	Path    string // the key path
	Message string

	col int // orders warnings on one line
}

// String formats w like Problem.Error.
func (w Warning) String() string { return prefix(w.File, w.Line, w.Path) + w.Message }

func prefix(file string, line int, path string) string {
	var b strings.Builder
	switch {
	case file != "" && line > 0:
		b.WriteString(file + ":" + strconv.Itoa(line) + ": ")
	case file != "":
		b.WriteString(file + ": ")
	case line > 0:
		b.WriteString("line " + strconv.Itoa(line) + ": ")
	}
	if path != "" {
		b.WriteString(path + ": ")
	}
	return b.String()
}

// joinProblems orders problems by position (file order) and joins them.
func joinProblems(ps []*Problem) error {
	if len(ps) == 0 {
		return nil
	}
	sortByPosition(ps, func(p *Problem) (int, int) { return p.Line, p.col })
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// sortByPosition sorts by line and column, stably: problems at one place
// keep the order they were found in. Unknown lines (0) go last.
func sortByPosition[T any](xs []T, at func(T) (line, col int)) {
	key := func(x T) (int, int) {
		if l, c := at(x); l > 0 {
			return l, c
		}
		return math.MaxInt, 0
	}
	slices.SortStableFunc(xs, func(a, b T) int {
		la, ca := key(a)
		lb, cb := key(b)
		return cmp.Or(cmp.Compare(la, lb), cmp.Compare(ca, cb))
	})
}
