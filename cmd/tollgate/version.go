package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time, e.g.
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)" ./cmd/tollgate
//
// When empty, they come from the build information the go command embeds
// (the module version for `go install …@version`, the VCS revision for a
// build inside a git checkout).
var (
	version string
	commit  string
)

// buildVersion returns the version, the commit (possibly with
// "-modified") and the Go version of this binary.
func buildVersion() (ver, rev, goVersion string) {
	ver, rev, goVersion = version, commit, runtime.Version()
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if ver == "" {
			ver = "(unknown)"
		}
		return ver, rev, goVersion
	}
	if ver == "" {
		ver = info.Main.Version
	}
	if ver == "" {
		ver = "(devel)"
	}
	if rev == "" {
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" && modified {
			rev += "-modified"
		}
	}
	return ver, rev, info.GoVersion
}

// versionString is the version alone, for the User-Agent.
func versionString() string {
	v, _, _ := buildVersion()
	return v
}

// runVersion is `tollgate version`.
func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("version", "", "Print the version, commit and Go version of this binary.")
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	ver, rev, goVersion := buildVersion()
	if rev == "" {
		rev = "unknown"
	}
	_, err = fmt.Fprintf(stdout, "tollgate %s (commit %s, %s %s/%s)\n", ver, rev, goVersion, runtime.GOOS, runtime.GOARCH)
	return err
}
