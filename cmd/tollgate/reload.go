package main

import (
	"reflect"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/proxyconfig"
	"github.com/tollgate-dev/tollgate/proxy"
)

// reload rereads the configuration file (SIGHUP) and applies it, without
// dropping a connection, and returns the configuration now in force. A
// file with errors is rejected with every problem logged, and the running
// configuration stays. Settings that only take effect at start-up (the
// listen addresses, the store section and Stripe) keep their running
// values; a warning names each one that changed. With mock (--mock) the
// routes go to the mock provider, as at start.
func reload(px *proxy.Server, running *config.Config, path string, log *zap.Logger, mock *mockServer) *config.Config {
	cfg, err := config.Load(path)
	if err != nil {
		var problems []string
		for _, e := range unjoin(err) {
			problems = append(problems, e.Error())
		}
		log.Error("config reload rejected; keeping the running configuration", zap.String("file", path), zap.Strings("problems", problems))
		return running
	}
	cfg = mock.apply(cfg)
	for _, w := range cfg.Warnings {
		log.Warn("config warning", zap.String("warning", w.String()))
	}
	next := keepStartupSettings(running, cfg, log)
	if err := px.Reload(proxyconfig.Settings(next)); err != nil {
		log.Error("config reload rejected; keeping the running configuration", zap.String("file", path), zap.Error(err))
		return running
	}
	log.Info("config reloaded", zap.Int("routes", len(next.Routes)))
	return next
}

// keepStartupSettings returns a copy of next with the settings that only
// take effect at start-up taken from running, and warns about each one
// that next changes.
func keepStartupSettings(running, next *config.Config, log *zap.Logger) *config.Config {
	kept := *next
	kept.Listen, kept.Admin.Listen = running.Listen, running.Admin.Listen
	kept.Store, kept.Stripe = running.Store, running.Stripe
	for _, d := range []struct {
		key     string
		changed bool
	}{
		{"listen", next.Listen != running.Listen},
		{"admin.listen", next.Admin.Listen != running.Admin.Listen},
		{"store", !next.Store.Equal(running.Store)},
		{"stripe", !reflect.DeepEqual(next.Stripe, running.Stripe)},
	} {
		if d.changed {
			log.Warn("config reload: this setting changed but only takes effect after a restart; the running value stays", zap.String("key", d.key))
		}
	}
	return &kept
}

// unjoin returns the errors err joins, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
