package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/ledger"
)

// store is what serve needs of a ledger: the Store the proxy meters into
// and the Meta that Stripe reconciliation keeps its facts and lock in.
// *ledger.RedisStore and *ledger.BoltStore are both.
type store interface {
	ledger.Store
	ledger.Meta
}

// probeTimeout bounds each start-up check of Redis: whether it is a
// cluster, and whether it is safe to keep money in.
const probeTimeout = 5 * time.Second

// storeCheckInterval is how often serve checks the store between probes
// (ledger.Store.Ready): a Redis that lost its data or its memory is found
// within this, even where nothing calls /readyz.
const storeCheckInterval = 5 * time.Second

// openStore opens the store the configuration names: Redis when
// store.redis_url is set, otherwise the embedded file at store.path.
//
// A Redis is checked before it is used (ledger.RedisStore.Ready): one
// whose maxmemory-policy may evict keys is refused; one without
// persistence, or that refuses CONFIG GET, gets a warning; the first
// check marks it so that a later loss of its data is noticed. A Redis that
// does not answer yet, or lost its data, is used all the same: /readyz
// and every request say so until it recovers or an operator acts.
func openStore(ctx context.Context, cfg config.Store, ev *ledger.EventOptions, log *zap.Logger) (store, error) {
	opts := ledger.Options{Logger: log, Events: ev}
	if cfg.RedisURL == "" {
		s, err := ledger.OpenBolt(cfg.Path, opts)
		if err != nil {
			return nil, embeddedStoreError(cfg.Path, err)
		}
		return s, nil
	}
	client, err := redisClient(ctx, cfg.RedisURL, log)
	if err != nil {
		return nil, err
	}
	var s store
	if cfg.LeasesOn() {
		s = ledger.NewLeaseStore(client, opts, ledger.LeaseOptions{
			FlushInterval: cfg.Leases.FlushInterval,
			TTL:           cfg.Leases.TTL,
			Share:         int(cfg.Leases.Share),
		})
	} else {
		s = ledger.NewRedisStore(client, opts)
	}
	cctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	switch err := s.Ready(cctx); {
	case errors.Is(err, ledger.ErrUnsafeStore):
		_ = s.Close() // never used; the refusal is the error to report
		return nil, fmt.Errorf("store.redis_url %s: %w", redactRedisURL(cfg.RedisURL), err)
	case err != nil:
		log.Warn("the Redis store is not ready at start-up; requests get 503 billing_unavailable until it is", zap.String("redis", redactRedisURL(cfg.RedisURL)), zap.Error(err))
	}
	return s, nil
}

// embeddedStoreError is the error for an embedded store that could not be
// opened at path, saying what to do when the file system is why. The
// usual case is a container: the working directory on a read-only root
// file system (Kubernetes readOnlyRootFilesystem) or not writable by the
// image's user, where tollgate.db cannot be created.
func embeddedStoreError(path string, err error) error {
	where := path
	if abs, aerr := filepath.Abs(path); aerr == nil && abs != path {
		where += " (" + abs + ")"
	}
	const fix = "set store.path to a file on a writable volume (one tollgate process per file), or set store.redis_url to keep balances in Redis"
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("open the embedded store: store.path %s is on a read-only file system (a container's read-only root file system?); %s: %w", where, fix, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("open the embedded store: this process (uid %d) may not create or write store.path %s; %s: %w", os.Getuid(), where, fix, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("open the embedded store: the directory of store.path %s does not exist; create it, or %s: %w", where, fix, err)
	}
	return fmt.Errorf("open the embedded store (store.path %s): %w", where, err)
}

// redisClient builds the client for store.redis_url.
//
//   - redis://, rediss:// (TLS) and unix:// URLs take go-redis's options as
//     query parameters (dial_timeout, pool_size, max_retries, …).
//   - The connection speaks RESP2 unless the URL sets protocol=3.
//   - A Redis Cluster is used when the URL lists more nodes with
//     ?addr=host:port (go-redis's cluster URL form), or when the one node
//     named reports cluster_enabled:1 at start-up. Either way the
//     cluster's options are parsed from the URL by go-redis, which
//     refuses those only a single node has (such as skip_verify).
//
// Unless the URL sets max_retries, a command is retried once, and a
// failed dial is not retried: while Redis is down the proxy should answer
// 503 billing_unavailable in milliseconds, not after go-redis's default
// two seconds of retries. tollgate retries settlements itself. Context
// deadlines are always honoured (ContextTimeoutEnabled), so that a Redis
// that hangs rather than refuses costs a request store.timeout, not
// read_timeout for every retry.
func redisClient(ctx context.Context, raw string, log *zap.Logger) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, password included: keep only why.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store.redis_url is not a URL (%v); want e.g. redis://:password@redis:6379/0", err)
	}
	q := u.Query()
	tuneRetries := !q.Has("max_retries")
	// RESP2 unless the URL asks otherwise: tollgate's scripts return only
	// integers and strings, and RESP3 makes go-redis look for push
	// notifications around every reply, which costs on the request path.
	resp2 := !q.Has("protocol")
	bad := func(err error) error {
		return fmt.Errorf("store.redis_url %s: %v; want e.g. redis://:password@redis:6379/0", redactRedis(u), err)
	}
	// tune applies the defaults above to either client's options.
	tune := func(maxRetries, protocol, dialerRetries *int, contextTimeouts *bool) {
		if tuneRetries {
			*maxRetries = 1
		}
		if resp2 {
			*protocol = 2
		}
		*dialerRetries = 1
		*contextTimeouts = true
	}
	// The URL is the one definition of the options: a cluster's are
	// parsed from it by go-redis as well, so every option it carries
	// reaches the cluster client, and one that only a single node takes
	// (such as skip_verify) is an error naming it, never dropped.
	cluster := func() (redis.UniversalClient, error) {
		opts, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, bad(err)
		}
		tune(&opts.MaxRetries, &opts.Protocol, &opts.DialerRetries, &opts.ContextTimeoutEnabled)
		return redis.NewClusterClient(opts), nil
	}
	if q.Has("addr") {
		return cluster()
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, bad(err)
	}
	tune(&opts.MaxRetries, &opts.Protocol, &opts.DialerRetries, &opts.ContextTimeoutEnabled)
	client := redis.NewClient(opts)

	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	info, err := client.Info(pctx, "cluster").Result()
	if err != nil {
		log.Warn("Redis does not answer at start-up; assuming a single node (list every node with ?addr=host:port for a cluster). Requests get 503 billing_unavailable until it answers",
			zap.String("redis", redactRedis(u)), zap.Error(err))
		return client, nil
	}
	if !strings.Contains(info, "cluster_enabled:1") {
		return client, nil
	}
	_ = client.Close() // only the probe used it; closing an idle client cannot lose anything
	log.Info("Redis Cluster detected", zap.String("redis", redactRedis(u)))
	return cluster()
}

// redactRedisURL is raw as logs may show it: see redactRedis.
func redactRedisURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(hidden)"
	}
	return redactRedis(u)
}

// redactRedis is u without its secret. url.URL.Redacted hides only a
// password; a user name without a password is hidden as well, because
// "redis://secret@host" is a common slip for "redis://:secret@host" and
// puts the password where a user name goes.
func redactRedis(u *url.URL) string {
	if u.User != nil {
		if _, ok := u.User.Password(); !ok && u.User.Username() != "" {
			v := *u
			v.User = url.User("xxxxx")
			return v.String()
		}
	}
	return u.Redacted()
}

// registerLeaseMetrics exports what stats counts (ledger.LeaseStats):
// tollgate_lease_holds_total{from} says how many request holds came from
// a lease and how many were reserved in Redis, and
// tollgate_lease_syncs_total{result} the lease syncs that succeeded and
// failed (a failure's closes go with the next sync; alert when failures
// keep rising).
func registerLeaseMetrics(reg prometheus.Registerer, stats func() ledger.LeaseStats) {
	counter := func(name, help string, labels prometheus.Labels, f func(ledger.LeaseStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f(stats())) })
	}
	const holds, syncs = "tollgate_lease_holds_total", "tollgate_lease_syncs_total"
	const holdsHelp, syncsHelp = "Request holds, by where they came from: a lease in memory, or Redis.", "Lease syncs with Redis, by result."
	reg.MustRegister(
		counter(holds, holdsHelp, prometheus.Labels{"from": "lease"}, func(s ledger.LeaseStats) int64 { return s.Lent }),
		counter(holds, holdsHelp, prometheus.Labels{"from": "redis"}, func(s ledger.LeaseStats) int64 { return s.Reserved }),
		counter(syncs, syncsHelp, prometheus.Labels{"result": "ok"}, func(s ledger.LeaseStats) int64 { return s.Syncs }),
		counter(syncs, syncsHelp, prometheus.Labels{"result": "error"}, func(s ledger.LeaseStats) int64 { return s.SyncFailures }),
	)
}
