// Command summary prints, after go test in `make test`, one line naming
// the tests that skipped because a program they need (redis-server,
// redis-cli, stripe-mock) is not on PATH, and how to install it. It
// prints nothing when every program is there, and nothing under CI, where
// those tests fail instead. It always exits 0: it reports, go test
// decides.
package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/tollgate-dev/tollgate/internal/testdeps"
)

func main() {
	run(os.Stdout, testdeps.InCI(), exec.LookPath)
}

// run writes the summary to w unless ci, looking tools up with lookPath.
func run(w io.Writer, ci bool, lookPath func(string) (string, error)) {
	if ci {
		return
	}
	if line := testdeps.Summary(testdeps.Missing(lookPath)); line != "" {
		_, _ = fmt.Fprintln(w, line) // stdout gone: nobody to tell
	}
}
