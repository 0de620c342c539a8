// Package proxy is tollgate's HTTP side: the metering reverse proxy an
// application sends its AI API calls through, and the admin API beside it.
//
// For every request the proxy finds the route, identifies the customer,
// reads and prices the body, reserves the worst-case cost (a hold) in the
// ledger, forwards the request with httputil.ReverseProxy, meters the
// response as it streams back, and settles the hold with the real usage
// once the body ends. Everything it refuses is answered in OpenAI's error
// shape with the codes of DESIGN's error table (see errors.go).
//
// It does not parse provider formats or compute prices (package meter),
// keep balances (package ledger), talk to Stripe (the admin API only mounts
// the webhook handler and calls a Reconciler), or read files, flags and the
// environment (cmd/tollgate builds the Config and the store and passes
// them in).
package proxy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/ledger"
)

// Options are a Server's dependencies besides the configuration and the
// store. The zero value works.
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
	// for manual application. Zero means DefaultSettleRetryFor.
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
	store     ledger.Store
	now       func() time.Time
	log       *zap.Logger
	m         *metrics
	transport http.RoundTripper
	buffers   *bufferPool
	stdlog    *log.Logger
	retryFor  time.Duration

	// Settings fixed at New: the store's and the listeners' cannot change
	// without a restart.
	holdTTL      time.Duration
	storeTimeout time.Duration // bounds the reservation and each store check
	initial      *config.Config
	health       storeHealth

	state atomic.Pointer[state]
	// busy counts handlers running and settlements or releases in flight;
	// Drain waits for it to reach zero.
	busy     atomic.Int64
	draining atomic.Bool
	quit     chan struct{} // closed when Drain gives up waiting
	quitOnce sync.Once
}

// state is everything a reload replaces, swapped atomically: a request
// uses the state it started with from start to finish.
type state struct {
	cfg            *config.Config
	routes         map[*config.Route]*route
	customerHeader string
	maxBody        int64
	bodyTimeout    time.Duration
	settleTimeout  time.Duration
	maxDuration    time.Duration // max_request_duration
	adminEnabled   bool
	adminToken     [sha256.Size]byte // SHA-256 of admin.token, compared in constant time
}

// New returns a Server for cfg, metering into store. cfg must be valid
// (config.Load and config.Parse return valid configurations).
func New(cfg *config.Config, store ledger.Store, opts Options) (*Server, error) {
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
		// ReverseProxy logs body copy errors; ours are logged with the
		// request's context already, so its lines only matter when
		// debugging.
		stdlog:   mustStdLog(opts.Logger.Named("httputil")),
		retryFor: opts.SettleRetryFor,
		quit:     make(chan struct{}),
	}
	if cfg == nil {
		return nil, errors.New("proxy: config is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: invalid config: %w", err)
	}
	s.holdTTL = cfg.Store.HoldTTL
	s.storeTimeout = cfg.Store.Timeout
	s.initial = cfg
	s.state.Store(s.build(cfg))
	return s, nil
}

// Reload replaces the routes, prices, customer header, request size limit,
// request body timeout, settle timeout, max_request_duration and admin
// token with cfg's, atomically: requests already running finish under the
// configuration they started with, and no connection is dropped. An
// invalid cfg is rejected with the error and the current configuration
// stays. Settings that need a restart (listen
// addresses, the store section, Stripe) keep their running values; a
// warning names each one that changed.
func (s *Server) Reload(cfg *config.Config) error {
	if cfg == nil {
		s.m.reloads.WithLabelValues("rejected").Inc()
		return errors.New("proxy: reload: config is nil")
	}
	if err := cfg.Validate(); err != nil {
		s.m.reloads.WithLabelValues("rejected").Inc()
		return fmt.Errorf("proxy: reload rejected, keeping the running configuration: %w", err)
	}
	old := s.initial
	for _, d := range []struct {
		key     string
		changed bool
	}{
		{"listen", cfg.Listen != old.Listen},
		{"admin.listen", cfg.Admin.Listen != old.Admin.Listen},
		{"store", cfg.Store != old.Store},
		{"stripe", !reflect.DeepEqual(cfg.Stripe, old.Stripe)},
	} {
		if d.changed {
			s.log.Warn("config reload: this setting changed but only takes effect after a restart; the running value stays", zap.String("key", d.key))
		}
	}
	s.state.Store(s.build(cfg))
	s.m.reloads.WithLabelValues("applied").Inc()
	s.log.Info("config reloaded", zap.Int("routes", len(cfg.Routes)))
	return nil
}

// Config returns the configuration in force (the last one applied by New
// or Reload). It must not be modified.
func (s *Server) Config() *config.Config { return s.state.Load().cfg }

func (s *Server) build(cfg *config.Config) *state {
	st := &state{
		cfg:            cfg,
		routes:         make(map[*config.Route]*route, len(cfg.Routes)),
		customerHeader: http.CanonicalHeaderKey(cfg.CustomerHeader),
		maxBody:        cfg.MaxRequestBytes,
		bodyTimeout:    cfg.RequestBodyTimeout,
		settleTimeout:  cfg.SettleTimeout,
		maxDuration:    cfg.MaxRequestDuration,
		adminEnabled:   cfg.Admin.Token != "",
		adminToken:     sha256.Sum256([]byte(cfg.Admin.Token)),
	}
	for i := range cfg.Routes {
		cr := &cfg.Routes[i]
		rt := &route{
			path:           cr.Path,
			api:            cr.API,
			prices:         cr.Prices,
			maxOutput:      cr.MaxOutputTokens,
			upstream:       cr.Upstream,
			customerHeader: st.customerHeader,
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
		st.routes[cr] = rt
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

// bufferPool recycles the 32 KiB buffers ReverseProxy copies responses
// with. A channel rather than a sync.Pool: putting a slice into a
// sync.Pool allocates its header, a channel copies it.
type bufferPool struct{ c chan []byte }

const copyBufferSize = 32 << 10

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
