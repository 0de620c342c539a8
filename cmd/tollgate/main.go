// Command tollgate is the metering proxy and its command-line client.
//
// `tollgate serve` runs the proxy and the admin API; `tollgate check`
// validates a configuration; balance, credit, lots, ledger, reconcile and
// stripe-events call a running instance's admin API. Only this package reads flags, the
// environment and files; the packages it wires take values.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful shutdown; from then on signals
	// get their default action, so a second Ctrl-C ends the process at
	// once (its open holds then expire after store.hold_ttl).
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// command is one subcommand. Its run has the shape of the program's run.
type command struct {
	name     string
	synopsis string // the arguments, as in the usage text
	summary  string
	run      func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists every subcommand in the order usage shows them.
func commands() []command {
	return []command{
		{"serve", "[--config FILE] [--mock] [--log-format json|console] [--log-level L]", "run the metering proxy and the admin API", runServe},
		{"check", "[--config FILE]", "validate the config; print its routes and prices", runCheck},
		{"balance", "ID", "show a customer's balance", runBalance},
		{"credit", "ID AMOUNT --key KEY [--reason TEXT] [--expires-in D] [--priority N]", "add credits to a customer (a negative AMOUNT removes them)", runCredit},
		{"lots", "ID", "list a customer's credit lots in the order they are spent", runLots},
		{"access", "ID", "show a customer's plan, subscription, credits, models and routes", runAccess},
		{"ledger", "ID [--limit N] [--before CURSOR | --all]", "list a customer's ledger entries, newest first", runLedger},
		{"events", "[--follow] [--after ID]", "list outbound events, oldest first; --follow tails them", runEvents},
		{"reconcile", "--since DURATION", "replay missed Stripe events from the last DURATION", runReconcile},
		{"stripe-events", "[--customer ID] [--type T] [--limit N]", "list the Stripe events received and what each did", runStripeEvents},
		{"accept-data-loss", "", "serve what Redis holds now, after tollgate found it lost data", runAcceptDataLoss},
		{"version", "", "print the version", runVersion},
	}
}

// usage prints the program's usage to w.
func usage(w io.Writer) error {
	p := &printer{w: w}
	p.printf("%s", `tollgate meters AI API traffic against prepaid credits.

Usage:
  tollgate <command> [arguments]

Commands:
`)
	for _, c := range commands() {
		p.printf("  %-16s %-46s %s\n", c.name, c.synopsis, c.summary)
	}
	p.printf("%s", `
serve and check read the config from --config, else $TOLLGATE_CONFIG,
else tollgate.yaml. balance, credit, lots, ledger, events, reconcile,
stripe-events and accept-data-loss call the admin API at --admin URL, else $TOLLGATE_ADMIN_URL, else
http://127.0.0.1:9090, with the bearer token in $TOLLGATE_ADMIN_TOKEN;
--json prints the raw response.
Flags may come before or after the arguments.

Run 'tollgate <command> --help' for a command's flags.
`)
	return p.err
}

// run is the program: it dispatches args to a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_ = usage(stderr) // beside the usage error, which exitCode reports
		return usageErrorf("no command given")
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			return run(ctx, []string{rest[0], "--help"}, stdout, stderr)
		}
		return usage(stdout)
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, rest, stdout, stderr)
		}
	}
	_ = usage(stderr) // beside the usage error, which exitCode reports
	return usageErrorf("unknown command %q", name)
}

// usageError is a mistake in the command line; it exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errReported is returned by a subcommand that has already told the user
// what went wrong (check listing every problem); it only sets the exit
// status.
var errReported = errors.New("reported")

// exitCode reports err on stderr, unless it already was, and returns the
// process exit status: 0 on success, 2 for a usage mistake, 130 when
// interrupted, 1 otherwise. A failed write to stderr is not reported:
// there is nowhere left to, and the exit status still tells.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errReported):
		return 1
	case errors.As(err, &ue):
		_, _ = fmt.Fprintf(stderr, "tollgate: %v\nRun 'tollgate help' for usage.\n", err)
		return 2
	case errors.Is(err, context.Canceled):
		_, _ = fmt.Fprintln(stderr, "tollgate: interrupted")
		return 130
	default:
		_, _ = fmt.Fprintf(stderr, "tollgate: %v\n", err)
		return 1
	}
}
