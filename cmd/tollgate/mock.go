package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/mockprovider"
)

// `tollgate serve --mock` answers every route from the built-in mock
// provider instead of its upstream, so that tollgate can be tried, and an
// application tested against it, with no provider key. It is a flag rather
// than a route's upstream so that the configuration file stays the real
// one (the README's quick start serves config.example.yaml as it is) and
// no file that names real upstreams can turn it on: only the command line
// of the process can, and serve says so in a warning at start.
//
// Mock answers must never touch real balances, so --mock also ignores the
// configured store and keeps balances in a new embedded file in a
// temporary directory, removed on exit: every run starts with no credits,
// as a test wants.

// mockServer is the mock provider listening on a loopback port, and the
// throwaway store's directory.
type mockServer struct {
	url string // http://127.0.0.1:PORT
	dir string
	srv *http.Server
}

// startMock starts the mock provider on a free loopback port and creates
// the throwaway store's directory.
func startMock(log *zap.Logger) (*mockServer, error) {
	dir, err := os.MkdirTemp("", "tollgate-mock-")
	if err != nil {
		return nil, fmt.Errorf("--mock: create the throwaway store's directory: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = os.RemoveAll(dir) // nothing in it yet; the listen error is the one to report
		return nil, fmt.Errorf("--mock: listen for the mock provider: %w", err)
	}
	m := &mockServer{
		url: "http://" + ln.Addr().String(),
		dir: dir,
		srv: &http.Server{
			Handler:           mockprovider.New(mockprovider.Options{}),
			ReadHeaderTimeout: readHeaderTimeout,
			ErrorLog:          zap.NewStdLog(log.Named("mock")),
		},
	}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the mock provider stopped; requests get 502 upstream_unavailable", zap.Error(err))
		}
	}()
	return m, nil
}

// apply returns a copy of cfg whose routes go to the mock provider, each
// at the path that speaks its api, and whose store is the throwaway file.
// A nil m returns cfg.
func (m *mockServer) apply(cfg *config.Config) *config.Config {
	if m == nil || cfg == nil {
		return cfg
	}
	c := *cfg
	c.Routes = slices.Clone(cfg.Routes)
	for i := range c.Routes {
		u, err := url.Parse(m.url + mockprovider.UpstreamPath(c.Routes[i].API))
		if err != nil {
			panic("tollgate: mock URL: " + err.Error()) // built from a listener's address: always parses
		}
		c.Routes[i].Upstream = u
	}
	c.Store.RedisURL = ""
	c.Store.Path = filepath.Join(m.dir, "tollgate.db")
	return &c
}

// mockIgnores reports whether a configuration warning is about what --mock
// replaces: the routes' upstreams and credentials (an unset
// OPENAI_API_KEY) and the store section.
func mockIgnores(w config.Warning) bool {
	return strings.HasPrefix(w.Path, "routes[") || strings.HasPrefix(w.Path, "store.")
}

// close stops the mock provider and removes the throwaway store. Call it
// after serve has returned: the proxy's last requests still reach the
// mock while it drains.
func (m *mockServer) close() error {
	if m == nil {
		return nil
	}
	return errors.Join(m.srv.Close(), os.RemoveAll(m.dir))
}
