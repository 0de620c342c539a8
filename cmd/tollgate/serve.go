package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/proxyconfig"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/proxy"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// Listener timeouts. The proxy listener has no read or write timeout: an
// upload or a stream lasts as long as it keeps moving. Slow clients are
// bounded by the header and idle timeouts; the body by max_request_bytes
// and, for a body that stops arriving, request_body_timeout, which the
// proxy applies between reads (proxy/body.go).
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	adminReadTimeout  = time.Minute
	// adminShutdown bounds how long the admin listener drains after the
	// proxy has: probes, metrics and webhooks are quick.
	adminShutdown = 5 * time.Second
)

// runServe is `tollgate serve`.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("serve", "[--config FILE] [--mock] [--log-format json|console]",
		"Run the metering proxy (listen) and the admin API (admin.listen) until SIGINT or SIGTERM,\n"+
			"then drain in-flight requests for shutdown_timeout and settle every one of them.\n"+
			"SIGHUP reloads routes, prices, the customer header, limits and the admin token from the\n"+
			"same file; a file with errors is rejected and the running configuration kept.\n"+
			"--mock answers every route from the built-in mock provider instead of its upstream\n"+
			"and keeps balances in a throwaway store: to try tollgate, or test an application\n"+
			"against it, without provider keys. Never for real traffic.")
	configPath := configFlag(f)
	mock := f.Bool("mock", false, "answer every route from the built-in mock provider (no upstream is called) and keep balances in a throwaway store deleted on exit; never for real traffic")
	logFormat := f.String("log-format", "json", "log encoding: json or console")
	logLevel := f.String("log-level", "info", "log level: debug, info, warn or error (debug logs every request)")
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	if *logFormat != "json" && *logFormat != "console" {
		return usageErrorf("serve: --log-format %q: want json or console", *logFormat)
	}
	level, err := zapcore.ParseLevel(*logLevel)
	if err != nil {
		return usageErrorf("serve: --log-level %q: want debug, info, warn or error", *logLevel)
	}
	path, from := configPath()
	cfg, err := loadConfig(path, from)
	if *mock && cfg != nil {
		cfg.Warnings = slices.DeleteFunc(slices.Clone(cfg.Warnings), mockIgnores)
	}
	// serve logs to stderr as well, and runs on if it is gone.
	_ = printWarnings(stderr, cfg)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, *logFormat, level)
	defer func() { _ = logger.Sync() }()
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(proxyconfig.GCPercent)
	}
	var ms *mockServer
	if *mock {
		if ms, err = startMock(logger); err != nil {
			return err
		}
		defer func() {
			if err := ms.close(); err != nil {
				logger.Warn("--mock: stopping the mock provider or removing its throwaway store failed", zap.String("store", ms.dir), zap.Error(err))
			}
		}()
	}
	return serve(ctx, cfg, path, logger, stdout, ms)
}

// newLogger returns a zap logger writing to w: JSON lines for log
// collectors, or the console encoding for people.
func newLogger(w io.Writer, format string, level zapcore.Level) *zap.Logger {
	var enc zapcore.Encoder
	if format == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w))))
}

// serve wires config → store → Stripe → proxy → listeners, runs until ctx
// ends, then shuts down in order: stop accepting, let requests and streams
// finish (shutdown_timeout), cut what is left, settle everything, close
// the store. With mock (--mock), every route goes to it and the store is
// its throwaway file, at start and on every reload.
func serve(ctx context.Context, cfg *config.Config, path string, log *zap.Logger, stdout io.Writer, mock *mockServer) (err error) {
	cfg = mock.apply(cfg)
	// Take SIGHUP over first: its default action kills the process, and a
	// reload signal may come while the store is still being opened (a
	// Redis probe can take seconds). One that arrives before serving is
	// applied once the loop below runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// go-redis logs through a process-wide logger; route it into ours, at
	// debug level: while Redis is down it reports every failed dial, and
	// the proxy already logs what matters.
	redis.SetLogger(redisLogger{log.Named("redis")})
	st, err := openStore(ctx, cfg.Store, eventOptions(cfg.Events), log.Named("store"))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close the store: %w", cerr)
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	leaseStats := func() ledger.LeaseStats { return ledger.LeaseStats{} } // zeros without leases, so that every series exists
	if ls, ok := st.(*ledger.LeaseStore); ok {
		leaseStats = ls.Stats
	}
	registerLeaseMetrics(reg, leaseStats)

	syncer, err := stripesync.New(st, stripesync.Options{
		WebhookSecrets: cfg.Stripe.WebhookSecrets,
		APIKey:         cfg.Stripe.APIKey,
		APIBase:        cfg.Stripe.APIBase,
		Livemode:       cfg.Stripe.Livemode,
		Prices:         cfg.Stripe.Prices,
		Logger:         log.Named("stripe"),
		Registerer:     reg,
	})
	if err != nil {
		return fmt.Errorf("stripe: %w", err)
	}
	px, err := proxy.New(proxyconfig.Settings(cfg), st, proxy.Options{Logger: log.Named("proxy"), Registerer: reg})
	if err != nil {
		return err
	}
	adminOpts := proxy.AdminOptions{
		Reconciler: reconciler{syncer},
		Webhook:    syncer.WebhookHandler(),
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
	}
	if rs, ok := st.(interface {
		AcceptDataLoss(context.Context) error
	}); ok {
		adminOpts.AcceptDataLoss = rs.AcceptDataLoss // the Redis store's, with or without leases
	}
	deliverer := newDeliverer(cfg.Events, st, &adminOpts, reg, log.Named("events"))
	adminHandler := px.AdminHandler(adminOpts)

	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen (proxy) on %s: %w", cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		_ = proxyLn.Close() // never served; the admin listener's error is the one to report
		return fmt.Errorf("listen (admin.listen) on %s: %w", cfg.Admin.Listen, err)
	}
	errLog := zap.NewStdLog(log.Named("http"))
	proxySrv := &http.Server{
		Handler:           px,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}
	adminSrv := &http.Server{
		Handler:           adminHandler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}

	proxyURL, adminURL := "http://"+proxyLn.Addr().String(), "http://"+adminLn.Addr().String()
	storeDesc := "embedded file " + cfg.Store.Path
	if cfg.Store.RedisURL != "" {
		storeDesc = "redis " + redactRedisURL(cfg.Store.RedisURL)
	}
	log.Info("tollgate serving", zap.String("proxy", proxyURL), zap.String("admin", adminURL),
		zap.String("store", storeDesc), zap.Int("routes", len(cfg.Routes)), zap.String("version", versionString()))
	if cfg.Admin.Token == "" {
		log.Warn("admin.token is empty: the admin API refuses every call until it is set")
	}
	if mock != nil {
		log.Warn("MOCK MODE (--mock): every route is answered by the built-in mock provider, never by its upstream, and balances live in a throwaway store deleted on exit; never use --mock for real traffic",
			zap.String("mock", mock.url), zap.String("store", cfg.Store.Path))
	}
	// For people and scripts watching stdout; the log line above says the
	// same, so serve goes on when stdout is gone.
	_, _ = fmt.Fprintf(stdout, "tollgate: proxy listening on %s\ntollgate: admin listening on %s\n", proxyURL, adminURL)
	if mock != nil {
		_, _ = fmt.Fprintf(stdout, "tollgate: --mock: routes are answered by the built-in mock provider; balances are thrown away on exit\n")
	}

	serveErr := make(chan error, 2)
	go func() { serveErr <- serveOn(proxySrv, proxyLn, "proxy") }()
	go func() { serveErr <- serveOn(adminSrv, adminLn, "admin") }()

	// Background jobs stop when bg ends, after the listeners.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var jobs sync.WaitGroup
	defer func() {
		stopBG()
		jobs.Wait()
	}()
	jobs.Go(func() { sweep(bg, st, cfg.Store.SweepInterval, log.Named("sweep")) })
	jobs.Go(func() { px.WatchStore(bg, storeCheckInterval) })
	if deliverer != nil {
		jobs.Go(func() { deliverer.Run(bg) })
	}
	if cfg.Stripe.APIKey != "" && cfg.Stripe.ReconcileInterval > 0 {
		jobs.Go(func() {
			if err := syncer.Run(bg, cfg.Stripe.ReconcileInterval, cfg.Stripe.ReconcileWindow); err != nil {
				log.Error("periodic Stripe reconciliation is off", zap.Error(err))
			}
		})
	}

	running := cfg // the configuration in force: reloads replace it
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: finishing in-flight requests", zap.Duration("shutdown_timeout", running.ShutdownTimeout))
			break loop
		case err := <-serveErr:
			runErr = err
			log.Error("listener failed; shutting down", zap.Error(err))
			break loop
		case <-hup:
			running = reload(px, running, path, log, mock)
		}
	}

	// Stop taking traffic: readiness fails at once, then the listener
	// closes and in-flight requests run to their end.
	px.BeginDrain()
	timeout := running.ShutdownTimeout
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := proxySrv.Shutdown(shutCtx); err != nil {
		// Streams outlived shutdown_timeout: cut them. Each cut stream is
		// settled with what it produced.
		log.Warn("shutdown_timeout reached; cutting the remaining requests", zap.Duration("shutdown_timeout", timeout))
		_ = proxySrv.Close()
	}
	settleCtx, cancelSettle := context.WithTimeout(context.WithoutCancel(ctx), running.SettleTimeout+5*time.Second)
	defer cancelSettle()
	if err := px.Drain(settleCtx); err != nil {
		log.Error("not every request was settled before exit; see the settlement errors above", zap.Error(err))
	}
	adminCtx, cancelAdmin := context.WithTimeout(context.WithoutCancel(ctx), adminShutdown)
	defer cancelAdmin()
	if err := adminSrv.Shutdown(adminCtx); err != nil {
		_ = adminSrv.Close()
	}
	// The Stripe journal is written in the background: keep what the
	// last webhooks recorded.
	if err := syncer.Flush(adminCtx); err != nil {
		log.Warn("not every Stripe event reached the journal before exit", zap.Error(err))
	}
	log.Info("tollgate stopped")
	return runErr
}

// serveOn serves until the server is shut down; that is not an error.
func serveOn(srv *http.Server, ln net.Listener, name string) error {
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s listener: %w", name, err)
}

// sweep removes expired holds every interval. Expired holds already stop
// counting; sweeping keeps the store small.
func sweep(ctx context.Context, st store, interval time.Duration, log *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := st.Sweep(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("sweeping expired holds failed; retrying next interval", zap.Error(err))
			case n > 0:
				log.Info("expired holds removed (a process stopped without settling them)", zap.Int("holds", n))
			}
		}
	}
}

// reconciler adapts stripesync's errors to the admin API's classes.
type reconciler struct{ s *stripesync.Syncer }

func (r reconciler) Reconcile(ctx context.Context, since time.Duration) (int, int, error) {
	events, applied, err := r.s.Reconcile(ctx, since)
	var apiErr *stripesync.APIError
	switch {
	case err == nil:
	case errors.Is(err, stripesync.ErrNoAPIKey):
		err = proxy.Classed(proxy.ErrNotConfigured, err)
	case errors.Is(err, stripesync.ErrInvalidWindow):
		err = proxy.Classed(proxy.ErrInvalidArgument, err)
	case errors.Is(err, stripesync.ErrIncomplete):
		// Before *APIError: the events that failed may have failed on a
		// Stripe API call, but the listing finished and a rerun retries
		// them.
		err = proxy.Classed(proxy.ErrIncomplete, err)
	case errors.As(err, &apiErr):
		err = proxy.Classed(proxy.ErrStripeAPI, err)
	}
	return events, applied, err
}

// redisLogger writes go-redis's internal messages to zap at debug level.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, v...)))
	}
}
