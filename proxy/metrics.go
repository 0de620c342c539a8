package proxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/usage"
)

// metrics are the proxy's Prometheus collectors. Names follow
// tollgate_<noun>_<unit>_total for counters; the README lists them.
//
// Credits are exported as a float counter of whole credits
// (tollgate_credits_charged_total), the unit operators price in, because
// Prometheus samples are float64 anyway: it is exact to the micro-credit
// up to 2^53 micro-credits (about 9 billion credits) charged per process
// lifetime and an approximation beyond. The ledger, not the metric, is
// the record of money.
type metrics struct {
	requests        *prometheus.CounterVec   // route, status
	credits         *prometheus.CounterVec   // route
	tokens          *prometheus.CounterVec   // route, class
	toolCalls       *prometheus.CounterVec   // route, tool
	estimated       *prometheus.CounterVec   // route
	refusals        *prometheus.CounterVec   // code
	holdLifetime    *prometheus.HistogramVec // outcome
	upstreamLatency *prometheus.HistogramVec // route
	storeLatency    *prometheus.HistogramVec // op
	openStreams     prometheus.Gauge
	settleRetries   prometheus.Counter
	settleFailures  prometheus.Counter
	renewals        *prometheus.CounterVec // result
	cuts            prometheus.Counter
	reloads         *prometheus.CounterVec // result
	storeReady      prometheus.Gauge
	dataLosses      prometheus.Counter

	// Hot-path children, resolved once.
	reserveLatency prometheus.Observer
	settleLatency  prometheus.Observer
	releaseLatency prometheus.Observer
	heldSettled    prometheus.Observer
	heldReleased   prometheus.Observer
	renewed        prometheus.Counter
	renewFailed    prometheus.Counter
}

// countSeries returns the series that counts the class name of a ledger
// entry (a name usage.Tokens.TokenCounts yields) on route: a tool's calls
// ("web_search_calls") in tollgate_tool_calls_total by tool
// ("web_search"), a token class ("cached_input_tokens") in
// tollgate_tokens_total by class, its name without "_tokens"
// ("cached_input"). So the metrics count what the ledger records, class
// for class, and a class added to usage.Tokens is counted without a
// change here.
func (m *metrics) countSeries(route, name string) prometheus.Counter {
	if tool, ok := strings.CutSuffix(name, "_calls"); ok {
		return m.toolCalls.WithLabelValues(route, tool)
	}
	return m.tokens.WithLabelValues(route, strings.TrimSuffix(name, "_tokens"))
}

// routeNone labels requests that matched no route.
const routeNone = "none"

// refusalCodes are the codes the proxy listener refuses requests with
// (DESIGN's error table), the values of tollgate_refusals_total's code.
var refusalCodes = [...]string{
	CodeMissingCustomer, CodeInsufficientCredits, CodeCustomerSuspended, CodeModelNotPriced,
	CodeInvalidRequest, CodeRequestTooLarge, CodeRequestTimeout, CodeRouteNotFound,
	CodeBillingUnavailable, CodeUpstreamUnavailable, CodeInternal,
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	upstream := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_requests_total",
			Help: "Requests the proxy answered, by route (its configured path, or \"none\") and HTTP status; 499 means the client went away before the answer.",
		}, []string{"route", "status"}),
		credits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_credits_charged_total",
			Help: "Credits charged by settlements, by route (whole credits; the ledger is exact).",
		}, []string{"route"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_tokens_total",
			Help: "Tokens charged by settlements, by route and class: each token class of a ledger entry, named without _tokens. input counts all input (cached, cache writes, audio and images included) and output all output (reasoning included); the other classes are parts of them.",
		}, []string{"route", "class"}),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_tool_calls_total",
			Help: "Calls of provider-side tools charged by settlements (Anthropic's web search and fetch, and code execution per container; OpenAI's built-in tools), by route and tool.",
		}, []string{"route", "tool"}),
		estimated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_usage_estimated_total",
			Help: "Settlements charged from tollgate's estimate because the response carried no usage (cut streams, clients gone), by route.",
		}, []string{"route"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_refusals_total",
			Help: "Requests tollgate answered itself instead of forwarding, by error code.",
		}, []string{"code"}),
		holdLifetime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_hold_lifetime_seconds",
			Help:    "Time from a hold's reservation to its settlement or release, by outcome.",
			Buckets: upstream,
		}, []string{"outcome"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_upstream_latency_seconds",
			Help:    "Time from forwarding a request to the upstream's response headers, by route.",
			Buckets: upstream,
		}, []string{"route"}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_store_latency_seconds",
			Help:    "Duration of credit store calls on the request path, by operation (reserve, settle, release), failed ones included.",
			Buckets: latency,
		}, []string{"op"}),
		openStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_open_streams",
			Help: "Metered responses being streamed to clients now.",
		}),
		settleRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_settle_retries_total",
			Help: "Settlement attempts that failed and were retried (the store was unavailable or slow).",
		}),
		settleFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_settle_failures_total",
			Help: "Settlements given up on; each is logged with what to charge by hand. Alert on any increase.",
		}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_hold_renewals_total",
			Help: "Renewals of the holds of open requests, every store.hold_ttl/3, by result: renewed or failed (each failure is logged; the request goes on).",
		}, []string{"result"}),
		cuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_requests_cut_total",
			Help: "Requests still open at max_request_duration, cut and charged for what they produced.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result: applied or rejected.",
		}, []string{"result"}),
		storeReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_store_ready",
			Help: "1 when the last store check passed (the store answers, takes writes, and Redis is safe and kept its data), 0 otherwise; see /readyz for why.",
		}),
		dataLosses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_store_data_losses_total",
			Help: "Times a store check found that Redis lost tollgate's data (its marker keys gone or replaced); billing stops until an operator runs tollgate accept-data-loss. Alert on any increase.",
		}),
	}
	if reg != nil {
		var errs []error
		m.requests = register(reg, m.requests, &errs)
		m.credits = register(reg, m.credits, &errs)
		m.tokens = register(reg, m.tokens, &errs)
		m.toolCalls = register(reg, m.toolCalls, &errs)
		m.estimated = register(reg, m.estimated, &errs)
		m.refusals = register(reg, m.refusals, &errs)
		m.holdLifetime = register(reg, m.holdLifetime, &errs)
		m.upstreamLatency = register(reg, m.upstreamLatency, &errs)
		m.storeLatency = register(reg, m.storeLatency, &errs)
		m.openStreams = register(reg, m.openStreams, &errs)
		m.settleRetries = register(reg, m.settleRetries, &errs)
		m.settleFailures = register(reg, m.settleFailures, &errs)
		m.renewals = register(reg, m.renewals, &errs)
		m.cuts = register(reg, m.cuts, &errs)
		m.reloads = register(reg, m.reloads, &errs)
		m.storeReady = register(reg, m.storeReady, &errs)
		m.dataLosses = register(reg, m.dataLosses, &errs)
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	// Every series a fresh server can name is created at zero, so that
	// /metrics lists each metric from the first scrape and rate() and
	// absent() alerts work before the first event (Prometheus
	// instrumentation guide, "Avoid missing metrics"). Per-route series
	// are created with their route (forRoute).
	for _, code := range refusalCodes {
		m.refusals.WithLabelValues(code)
	}
	m.reloads.WithLabelValues("applied")
	m.reloads.WithLabelValues("rejected")
	m.reserveLatency = m.storeLatency.WithLabelValues("reserve")
	m.settleLatency = m.storeLatency.WithLabelValues("settle")
	m.releaseLatency = m.storeLatency.WithLabelValues("release")
	m.heldSettled = m.holdLifetime.WithLabelValues("settled")
	m.heldReleased = m.holdLifetime.WithLabelValues("released")
	m.renewed = m.renewals.WithLabelValues("renewed")
	m.renewFailed = m.renewals.WithLabelValues("failed")
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name (two Servers in one process, as in tests, share the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	*errs = append(*errs, err)
	return c
}

// routeMetrics are one route's children of the vectors, resolved when the
// route is built so that the request path does no label hashing.
type routeMetrics struct {
	vec       *prometheus.CounterVec
	route     string
	byStatus  [600]atomic.Pointer[prometheus.Counter]
	upstream  prometheus.Observer
	credits   prometheus.Counter
	counts    []prometheus.Counter // each class's series, in usage.Tokens.TokenCounts order
	estimated prometheus.Counter
}

// forRoute resolves a route's series, creating them at zero; its
// requests are counted from the first at status 200.
func (m *metrics) forRoute(path string) *routeMetrics {
	ok := m.requests.WithLabelValues(path, "200")
	rm := &routeMetrics{
		vec:       m.requests,
		route:     path,
		upstream:  m.upstreamLatency.WithLabelValues(path),
		credits:   m.credits.WithLabelValues(path),
		estimated: m.estimated.WithLabelValues(path),
	}
	for name := range (usage.Tokens{}).TokenCounts() {
		rm.counts = append(rm.counts, m.countSeries(path, name))
	}
	rm.byStatus[http.StatusOK].Store(&ok)
	return rm
}

// charged counts the tokens and tool calls of a settled charge, as its
// ledger entry records them.
func (rm *routeMetrics) charged(t usage.Tokens) {
	i := 0
	for _, n := range t.TokenCounts() {
		if n > 0 {
			rm.counts[i].Add(float64(n))
		}
		i++
	}
}

// request counts one answered request with status.
func (rm *routeMetrics) request(status int) {
	if status < 0 || status >= len(rm.byStatus) {
		rm.vec.WithLabelValues(rm.route, strconv.Itoa(status)).Inc()
		return
	}
	p := rm.byStatus[status].Load()
	if p == nil {
		c := rm.vec.WithLabelValues(rm.route, strconv.Itoa(status))
		rm.byStatus[status].CompareAndSwap(nil, &c)
		p = rm.byStatus[status].Load()
	}
	(*p).Inc()
}
