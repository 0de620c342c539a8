package main

import (
	"context"
	"errors"
	"io"
)

// runServe is `tollgate serve`. Until the proxy is wired in, it parses its
// flags, loads and validates the configuration exactly as serve will, and
// then says that serving is not available yet. The proxy's wiring
// replaces this file; nothing else in the package depends on its insides.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("serve", "[--config FILE] [--log-format json|console]",
		"Run the metering proxy (listen) and the admin API (admin.listen) until SIGINT or SIGTERM,\nthen drain in-flight requests for shutdown_timeout.")
	configPath := configFlag(f)
	logFormat := f.String("log-format", "json", "log encoding: json or console")
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
	path, from := configPath()
	cfg, err := loadConfig(path, from)
	printWarnings(stderr, cfg)
	if err != nil {
		return err
	}
	return errors.New("serve is not wired yet: the proxy has not landed in this build; `tollgate check` validates the config meanwhile")
}
