package ledger_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// The bolt tests that need a second process re-run this test binary with
// helperEnv set; TestBoltHelperProcess then acts as that process.
const helperEnv = "TOLLGATE_LEDGER_HELPER"

func TestBoltHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for the bolt tests; runs only when re-executed by them")
	}
	path := os.Getenv(helperEnv + "_PATH")
	s, err := ledger.OpenBolt(path, ledger.Options{LockTimeout: 100 * time.Millisecond})
	switch mode {
	case "open":
		// Report how opening went.
		if err != nil {
			fmt.Println("error:", err)
			fmt.Println("is ErrStoreLocked:", errors.Is(err, ledger.ErrStoreLocked))
			os.Exit(0)
		}
		fmt.Println("opened")
		os.Exit(0)
	case "credit":
		// Credit as fast as possible, reporting each credit once Credit
		// has returned, until killed.
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		for i := 1; ; i++ {
			_, err := s.Credit(ctx, ledger.Credit{Customer: "crash", Amount: 1, Kind: ledger.KindGrant, Key: fmt.Sprintf("k%d", i)})
			if err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			fmt.Println("credited", i)
		}
	}
	os.Exit(2)
}

// helper starts this test binary as a helper process in mode on path,
// killed at the end of the test, and returns its stdout lines.
func helper(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_PATH="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}

func TestBoltSecondProcessGetsErrStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	s, err := ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	_, lines := helper(t, "open", path)
	var out []string
	for lines.Scan() {
		out = append(out, lines.Text())
	}
	got := strings.Join(out, "\n")
	if !strings.Contains(got, "is ErrStoreLocked: true") || !strings.Contains(got, path) || !strings.Contains(got, "one tollgate process per store file") {
		t.Fatalf("second process says:\n%s\nwant ErrStoreLocked naming %s and what to do", got, path)
	}
}

// TestBoltSameProcessGetsErrStoreLocked relies on bbolt's flock(2) lock,
// which belongs to the open file description: a second open of the same
// file conflicts even within one process (unlike fcntl locks).
func TestBoltSameProcessGetsErrStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	s, err := ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ledger.OpenBolt(path, ledger.Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ledger.ErrStoreLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second open = %v; want ErrStoreLocked naming the file", err)
	}
	s.Close()
	s, err = ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s.Close()
}

// TestBoltSurvivesKill kills a process that is crediting as fast as it can
// and checks that every credit it reported survived: Credit returns only
// after its commit is in the file. (kill -9 leaves the page cache intact,
// so this cannot show the fsync that power loss needs; bbolt does that in
// every commit unless NoSync is set, which OpenBolt never does.)
func TestBoltSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	cmd, lines := helper(t, "credit", path)
	reported := 0
	for lines.Scan() && reported < 30 {
		if _, err := fmt.Sscanf(lines.Text(), "credited %d", &reported); err != nil {
			t.Fatalf("helper says %q", lines.Text())
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup runs
		t.Fatal(err)
	}
	cmd.Wait()

	s, err := ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.Account(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance < money.Micros(reported) {
		t.Fatalf("balance after kill -9 = %d micros; the helper reported %d credits", a.Balance, reported)
	}
	checkInvariants(t, s, "crash")
	// Every reported key is a replay now, never a second credit.
	for i := 1; i <= reported; i++ {
		r, err := s.Credit(ctx, ledger.Credit{Customer: "crash", Amount: 1, Kind: ledger.KindGrant, Key: fmt.Sprintf("k%d", i)})
		if err != nil || r.Applied {
			t.Fatalf("replay of k%d = %+v, %v; want not applied", i, r, err)
		}
	}
}

// TestBoltRefusedReserveWritesNothing: requests naming customers that were
// never credited are refused, or served free, without creating anything in
// the file, so an application sending arbitrary customer ids cannot grow it.
func TestBoltRefusedReserveWritesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for i := range 50 {
		err := s.Reserve(ctx, fmt.Sprintf("stranger-%d", i), "h1", 1, time.Minute)
		var ice *ledger.InsufficientCreditsError
		if !errors.As(err, &ice) || ice.Available != 0 || ice.Required != 1 {
			t.Fatalf("Reserve for an unknown customer = %v, want insufficient credits (0 available, 0.000001 required)", err)
		}
	}
	// A free request of an unknown customer succeeds, as on Redis, and
	// leaves nothing behind either (Store.Reserve).
	if err := s.Reserve(ctx, "zero", "h1", 0, time.Minute); err != nil {
		t.Fatalf("zero Reserve: %v", err)
	}
	if _, err := s.Settle(ctx, "zero", "h1", 0, ledger.Charge{}); err != nil {
		t.Fatalf("zero Settle: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var names []string
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("customers")).ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Fatalf("customer buckets after refused and free reserves = %q, want none", names)
	}
}
