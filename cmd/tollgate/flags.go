package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/tollgate-dev/tollgate/config"
)

// errHelp means --help was asked for and answered; run returns nil.
var errHelp = errors.New("help shown")

// flagSet is a subcommand's flags plus what its --help prints.
type flagSet struct {
	*flag.FlagSet
	name, synopsis, about string
}

// newFlagSet returns the flags of subcommand name. The flag package's own
// printing is silenced: parse reports errors and help itself.
func newFlagSet(name, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, name: name, synopsis: synopsis, about: about}
}

// help prints the subcommand's usage and flags to w.
func (f *flagSet) help(w io.Writer) error {
	p := &printer{w: w}
	p.printf("Usage: tollgate %s %s\n\n%s\n", f.name, f.synopsis, f.about)
	hasFlags := false
	f.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		p.printf("\nFlags:\n")
		f.SetOutput(p)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
	return p.err
}

// parse parses args, which may mix flags and positional arguments in any
// order ("credit cust_1 10 --key k1"), and returns the positional ones.
// A negative number ("-5") is an argument, not a flag; "--" ends the
// flags. On --help it prints the help to stdout and returns errHelp.
func (f *flagSet) parse(args []string, stdout io.Writer) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) < 2 || a[0] != '-' || isNegativeNumber(a):
			pos = append(pos, a)
		default:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			fl := f.Lookup(name)
			if fl == nil || isBoolFlag(fl) || i+1 == len(args) {
				continue // unknown and bool flags take no separate value
			}
			i++
			flags = append(flags, args[i])
		}
	}
	if err := f.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if err := f.help(stdout); err != nil {
				return nil, err
			}
			return nil, errHelp
		}
		return nil, usageErrorf("%s: %v", f.name, err)
	}
	return pos, nil
}

func isNegativeNumber(s string) bool {
	return len(s) > 1 && s[0] == '-' && (s[1] == '.' || '0' <= s[1] && s[1] <= '9')
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// wantArgs checks the number of positional arguments.
func (f *flagSet) wantArgs(args []string, names ...string) error {
	if len(args) == len(names) {
		return nil
	}
	if len(args) < len(names) {
		return usageErrorf("%s needs %s: tollgate %s %s", f.name, strings.Join(names[len(args):], " and "), f.name, f.synopsis)
	}
	return usageErrorf("%s takes %d argument(s), got %d (%s): tollgate %s %s", f.name, len(names), len(args), strings.Join(args, " "), f.name, f.synopsis)
}

func requireID(f *flagSet, id string) error {
	if strings.TrimSpace(id) == "" {
		return usageErrorf("%s: the customer ID is empty: tollgate %s %s", f.name, f.name, f.synopsis)
	}
	return nil
}

// done maps errHelp to success for a subcommand's return.
func done(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

// configFlag adds --config to f and returns a function resolving the
// file to read: --config, else $TOLLGATE_CONFIG, else tollgate.yaml.
func configFlag(f *flagSet) func() (path, from string) {
	p := f.String("config", "", "the configuration file (default $TOLLGATE_CONFIG, else tollgate.yaml)")
	return func() (string, string) {
		if *p != "" {
			return *p, "--config"
		}
		if v := os.Getenv("TOLLGATE_CONFIG"); v != "" {
			return v, "$TOLLGATE_CONFIG"
		}
		return "tollgate.yaml", "the default"
	}
}

// loadConfig loads the configuration at path (named by from, for the
// message when it is missing). On an invalid file it returns the Config
// too, for its warnings; see config.Parse.
func loadConfig(path, from string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no config file at %s (%s); pass --config FILE or set $TOLLGATE_CONFIG, or start from config.example.yaml", path, from)
	}
	return cfg, err
}

// printWarnings writes the config's warnings, one a line.
func printWarnings(w io.Writer, cfg *config.Config) error {
	if cfg == nil {
		return nil
	}
	p := &printer{w: w}
	for _, warn := range cfg.Warnings {
		p.printf("warning: %s\n", warn)
	}
	return p.err
}
