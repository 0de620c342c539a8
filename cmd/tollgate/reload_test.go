package main

import (
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/proxyconfig"
	"github.com/tollgate-dev/tollgate/proxy"
)

// TestReloadKeepsStartupSettings: a reload applies what may change
// without a restart (a price here), keeps the running value of a setting
// that needs one (the store section), and says so once for it.
func TestReloadKeepsStartupSettings(t *testing.T) {
	dir := t.TempDir()
	upstream := "http://127.0.0.1:1"
	path := writeConfig(t, dir, upstream, boltSection(dir), "", "10")
	running, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	st := openLedger(t, filepath.Join(dir, "tollgate.db"))
	px, err := proxy.New(proxyconfig.Settings(running), st, proxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)

	writeConfig(t, dir, upstream, boltSection(dir)+", timeout: 2s", "", "20")
	next := reload(px, running, path, zap.New(core), nil)

	if n := logs.FilterField(zap.String("key", "store")).Len(); n != 1 {
		t.Errorf("%d warnings that store settings need a restart, want 1", n)
	}
	if n := logs.FilterMessage("config reloaded").Len(); n != 1 {
		t.Errorf("%d lines \"config reloaded\", want 1: %v", n, logs.All())
	}
	if next.Store != running.Store || next.Store.Timeout == 2*time.Second {
		t.Errorf("store section after the reload = %+v, want the running %+v", next.Store, running.Store)
	}
	if got := next.Routes[0].Prices["gpt-4o"].Output; got != mustParse(t, "20") {
		t.Errorf("output price after the reload = %s, want 20", got)
	}
}
