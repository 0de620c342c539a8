// Package proxy is tollgate's HTTP side: the metering reverse proxy an
// application sends its AI API calls through, and the admin API beside it.
//
// For every request the proxy finds the route, identifies the customer,
// reads and prices the body, reserves the worst-case cost (a hold) in the
// ledger, forwards the request with httputil.ReverseProxy, meters the
// response as it streams back, and settles the hold with the real usage
// once the body ends. Everything it refuses is answered in the error shape
// of the route's provider (OpenAI's when no route matches) with the codes
// of DESIGN's error table (see errors.go).
//
// It does not parse provider formats or compute prices (package meter),
// keep balances (package ledger), talk to Stripe (the admin API only mounts
// the webhook handler and calls a Reconciler), or read files, flags and the
// environment (cmd/tollgate builds the Settings from its configuration
// file, opens the store, and passes them in).
package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// Options are a Server's dependencies besides its Settings and the store.
// The zero value works.
type Options struct {
	// Now is the clock for hold lifetimes and latencies. Nil means
	// time.Now.
	Now func() time.Time
	// Logger receives operational messages; nil means zap.NewNop(). Request
	// and response bodies, API keys, tokens and credential headers are
	// never logged. Per-request lines are at debug level.
	Logger *zap.Logger
	// Registerer receives the proxy's metrics (see metrics.go); nil means
	// they are kept but not exported. Pass the registry that /metrics
	// serves.
	Registerer prometheus.Registerer
	// Transport sends requests upstream. Nil means NewTransport().
	Transport http.RoundTripper
	// SettleRetryFor is how long a settlement that fails because the store
	// is unavailable keeps being retried before it is given up and logged
	// for manual application (a charge the store holds queued,
	// ledger.ErrSettleQueued, is retried until it is recorded or the
	// Server drains). Zero means DefaultSettleRetryFor.
	SettleRetryFor time.Duration
}

// DefaultSettleRetryFor is how long a failing settlement is retried by
// default: long enough to ride out a Redis restart or failover. Settle is
// idempotent and charges a hold even after it expired, so a late retry is
// still correct.
const DefaultSettleRetryFor = 15 * time.Minute

// Server is the metering proxy. It is an http.Handler for the app-facing
// listener; AdminHandler returns the admin listener's handler. Create it
// with New; it is safe for concurrent use.
type Server struct {
	store     Store
	queuer    ledger.SettleQueuer // store, when it queues settlements (queueSettle); else nil
	now       func() time.Time
	log       *zap.Logger
	m         *metrics
	transport http.RoundTripper
	buffers   *bufferPool
	taps      sync.Pool // *meter.Tap, reset for each response (meteredBody)
	settlers  *settlers
	stdlog    *log.Logger
	retryFor  time.Duration
	health    storeHealth
	plans     planCache // plan inputs per customer, with plans configured (entitle.go)

	state atomic.Pointer[state]
	// busy counts handlers running and settlements or releases in flight;
	// Drain waits for it to reach zero.
	busy     atomic.Int64
	draining atomic.Bool
	quit     chan struct{} // closed when Drain gives up waiting
	quitOnce sync.Once
}

// Store is what the proxy needs of a credit store: the methods of
// ledger.Store it calls, each with the contract ledger.Store documents.
// *ledger.RedisStore and *ledger.BoltStore implement it.
type Store interface {
	ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error)
	ReservePlan(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, planVersion int64) (money.Micros, error)
	Plan(ctx context.Context, customer string) (ledger.PlanState, error)
	PutOverride(ctx context.Context, customer, value string) (ledger.PlanWrite, error)
	Settle(ctx context.Context, customer, holdID string, actual money.Micros, c ledger.Charge) (ledger.Entry, error)
	Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error
	Release(ctx context.Context, customer, holdID string) error
	Credit(ctx context.Context, c ledger.Credit) (ledger.CreditResult, error)
	Account(ctx context.Context, customer string) (ledger.Account, error)
	Lots(ctx context.Context, customer string) ([]ledger.Lot, error)
	Entries(ctx context.Context, customer, before string, limit int) (ledger.Page, error)
	Ready(ctx context.Context) error
}

var _ Store = ledger.Store(nil)

// state is everything a reload replaces, swapped atomically: a request
// uses the state it started with from start to finish.
type state struct {
	set            *Settings
	routes         []*route // routes[i] serves set.Routes[i]
	customerHeader string
	maxBody        int64
	bodyTimeout    time.Duration
	settleTimeout  time.Duration
	maxDuration    time.Duration // max_request_duration
	holdTTL        time.Duration
	storeTimeout   time.Duration // bounds the reservation and each store check
	adminEnabled   bool
	adminToken     [sha256.Size]byte // SHA-256 of admin.token, compared in constant time
}

// New returns a Server serving by set, metering into store. It refuses
// settings the proxy cannot work with (see Settings).
func New(set *Settings, store Store, opts Options) (*Server, error) {
	if store == nil {
		return nil, errors.New("proxy: store is nil")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	if opts.SettleRetryFor <= 0 {
		opts.SettleRetryFor = DefaultSettleRetryFor
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", err)
	}
	s := &Server{
		store:     store,
		now:       opts.Now,
		log:       opts.Logger,
		m:         m,
		transport: opts.Transport,
		buffers:   newBufferPool(),
		settlers:  newSettlers(),
		// ReverseProxy logs body copy errors; ours are logged with the
		// request's context already, so its lines only matter when
		// debugging.
		stdlog:   mustStdLog(opts.Logger.Named("httputil")),
		retryFor: opts.SettleRetryFor,
		quit:     make(chan struct{}),
	}
	if err := set.check(); err != nil {
		return nil, fmt.Errorf("proxy: invalid settings: %w", err)
	}
	s.queuer, _ = store.(ledger.SettleQueuer)
	s.state.Store(s.build(set))
	return s, nil
}

// Reload replaces the Server's settings with set, atomically: requests
// already running finish under the settings they started with, and no
// connection is dropped. Settings the proxy cannot work with are rejected
// with the error, and the running ones stay. Which settings of a
// configuration file may change without a restart is the caller's to
// decide: the proxy applies whatever it is given.
func (s *Server) Reload(set *Settings) error {
	if err := set.check(); err != nil {
		s.m.reloads.WithLabelValues("rejected").Inc()
		return fmt.Errorf("proxy: reload rejected, keeping the running settings: %w", err)
	}
	s.state.Store(s.build(set))
	s.m.reloads.WithLabelValues("applied").Inc()
	return nil
}

func (s *Server) build(set *Settings) *state {
	st := &state{
		set:            set,
		routes:         make([]*route, len(set.Routes)),
		customerHeader: http.CanonicalHeaderKey(set.CustomerHeader),
		maxBody:        set.MaxRequestBytes,
		bodyTimeout:    set.RequestBodyTimeout,
		settleTimeout:  set.SettleTimeout,
		maxDuration:    set.MaxRequestDuration,
		holdTTL:        set.HoldTTL,
		storeTimeout:   set.StoreTimeout,
		adminEnabled:   set.AdminToken != "",
		adminToken:     sha256.Sum256([]byte(set.AdminToken)),
	}
	for i := range set.Routes {
		cr := &set.Routes[i]
		rt := &route{
			path:           cr.Path,
			api:            cr.API,
			prices:         cr.Prices,
			serverTools:    cr.ServerTools,
			maxOutput:      cr.MaxOutputTokens,
			leaveUsage:     cr.LeaveStreamUsage,
			deployment:     cr.ModelFromDeployment,
			upstream:       cr.Upstream,
			customerHeader: st.customerHeader,
			dialect:        dialectFor(cr.API),
			m:              s.m.forRoute(cr.Path),
		}
		if len(cr.Headers) > 0 {
			rt.headers = make(http.Header, len(cr.Headers))
			for k, v := range cr.Headers {
				rt.headers[http.CanonicalHeaderKey(k)] = slices.Clip(slices.Clone(v))
			}
		}
		rt.proxy = &httputil.ReverseProxy{
			Rewrite:   rt.rewrite,
			Transport: s.transport,
			// Flush every write: SSE events must reach the client as they
			// arrive. ReverseProxy already does so for text/event-stream
			// and unknown lengths; -1 makes it unconditional, and costs
			// nothing for a JSON body that arrives in one read.
			FlushInterval:  -1,
			BufferPool:     s.buffers,
			ErrorLog:       s.stdlog,
			ErrorHandler:   s.upstreamError,
			ModifyResponse: s.modifyResponse,
		}
		st.routes[i] = rt
	}
	return st
}

func mustStdLog(l *zap.Logger) *log.Logger {
	std, err := zap.NewStdLogAt(l, zapcore.DebugLevel)
	if err != nil { // only for levels zap does not know
		return zap.NewStdLog(l)
	}
	return std
}

// NewTransport returns the http.Transport tollgate forwards with: proxy
// settings from the environment, HTTP/2 when the upstream offers it, many
// idle connections per host (one provider host takes all the traffic; the
// stdlib default of 2 would reconnect under load), and no overall or
// response-header timeout, since a long completion may take minutes before
// its first byte. Connecting and TLS handshakes time out after 10s.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// bufferPool recycles the buffers ReverseProxy copies responses with. A
// channel rather than a sync.Pool: putting a slice into a sync.Pool
// allocates its header, a channel copies it.
type bufferPool struct{ c chan []byte }

// copyBufferSize is 8 KiB, not ReverseProxy's 32 KiB: an open stream
// holds its buffer for as long as it lasts, and an SSE event is far
// smaller, so the larger buffer only costs memory. go run ./bench
// measured 95 KiB in use per open stream with 32 KiB buffers and 82 KiB
// with 8 KiB (bare httputil.ReverseProxy: 79 KiB); a large JSON body is
// merely copied in more reads.
const copyBufferSize = 8 << 10

func newBufferPool() *bufferPool { return &bufferPool{c: make(chan []byte, 256)} }

// Get implements httputil.BufferPool.
func (p *bufferPool) Get() []byte {
	select {
	case b := <-p.c:
		return b
	default:
		return make([]byte, copyBufferSize)
	}
}

// Put implements httputil.BufferPool.
func (p *bufferPool) Put(b []byte) {
	if cap(b) != copyBufferSize {
		return
	}
	select {
	case p.c <- b[:copyBufferSize]:
	default:
	}
}
