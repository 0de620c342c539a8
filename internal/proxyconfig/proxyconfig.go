// Package proxyconfig builds the proxy's Settings from a configuration
// file's Config. It is the one place that knows both shapes, so that the
// proxy needs no config package and cmd/tollgate, the bench tool and the
// proxy's tests serve a file the same way.
//
// It does not decide what a reload may change: cmd/tollgate does.
package proxyconfig

import (
	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/proxy"
)

// Settings returns the part of cfg the proxy serves by. cfg should be
// valid, as config.Load and config.Parse return it; the proxy refuses
// settings it cannot work with but reports them without file and line.
func Settings(cfg *config.Config) *proxy.Settings {
	set := &proxy.Settings{
		Routes:             make([]proxy.Route, len(cfg.Routes)),
		CustomerHeader:     cfg.CustomerHeader,
		MaxRequestBytes:    cfg.MaxRequestBytes,
		RequestBodyTimeout: cfg.RequestBodyTimeout,
		SettleTimeout:      cfg.SettleTimeout,
		MaxRequestDuration: cfg.MaxRequestDuration,
		HoldTTL:            cfg.Store.HoldTTL,
		StoreTimeout:       cfg.Store.Timeout,
		AdminToken:         cfg.Admin.Token,
		Plans:              cfg.Catalog(),
	}
	for i, r := range cfg.Routes {
		set.Routes[i] = proxy.Route{
			Path:            r.Path,
			API:             r.API,
			Upstream:        r.Upstream,
			Headers:         r.Headers,
			MaxOutputTokens: r.MaxOutputTokens,
			Prices:          r.Prices,
			ServerTools:     r.ServerTools,

			LeaveStreamUsage:    r.StreamUsage == config.StreamUsageLeave,
			ModelFromDeployment: r.ModelFrom == config.ModelFromDeployment,
		}
	}
	return set
}

// GCPercent is the garbage collector's target percentage tollgate serve
// runs with when $GOGC is not set, and go run ./bench with it. tollgate's
// live heap is small (about 1 MB under load, in the bench) and every
// request allocates tens of KB, so at Go's default of 100 the heap stays
// at the runtime's 4 MB floor and the collector runs every hundred or so
// requests, each time stopping the world and taking CPU from the proxy.
// At 400 that floor is 16 MB and the collector runs a quarter as often.
// $GOGC overrides it, and $GOMEMLIMIT (which the Kubernetes manifest sets
// below the container's memory limit) makes the collector work harder as
// the heap nears it, whatever this percentage.
const GCPercent = 400
