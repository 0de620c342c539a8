package ledger_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	case "hold":
		// Credit 10, settle a hold at 4, hold 5 more, and wait to be
		// killed.
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if _, err := s.Credit(ctx, ledger.Credit{Customer: "crash", Amount: 10 * money.Credit, Kind: ledger.KindGrant, Key: "k"}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		err := s.Reserve(ctx, "crash", "settled", 5*money.Credit, time.Hour)
		if err == nil {
			_, err = s.Settle(ctx, "crash", "settled", 4*money.Credit, ledger.Charge{})
		}
		if err == nil {
			err = s.Reserve(ctx, "crash", "held", 5*money.Credit, time.Hour)
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("holding")
		select {}
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

// TestBoltHoldsWriteNothing: Reserve, Extend and Release commit nothing
// to the file (the holds live in memory), a Settle commits once, and a
// hold still counts against the balance meanwhile.
func TestBoltHoldsWriteNothing(t *testing.T) {
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCredit(t, s, "alice", c("10"))
	before := mustTxID(t, s)
	for i := range 5 {
		mustReserve(t, s, "alice", fmt.Sprintf("h%d", i), c("2"), time.Minute)
	}
	wantErr(t, s.Reserve(ctx, "alice", "h5", c("0.000001"), time.Minute), ledger.ErrInsufficientCredits)
	if err := s.Extend(ctx, "alice", "h0", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "alice", "h1"); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, s, "alice", c("10"), c("8"))
	if got := mustTxID(t, s); got != before {
		t.Fatalf("reserve, extend and release committed %d transactions; want none", got-before)
	}
	mustSettle(t, s, "alice", "h2", c("1.5"))
	if got := mustTxID(t, s); got != before+1 {
		t.Fatalf("a settle committed %d transactions; want 1", got-before)
	}
	wantAccount(t, s, "alice", c("8.5"), c("6"))
}

func mustTxID(t *testing.T, s *ledger.BoltStore) int {
	t.Helper()
	id, err := s.TxID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestBoltCrashReleasesHolds kills a process that holds credits and has
// settled a hold: reopened, the file has the balance and the charge, no
// hold counts any more, and the settled hold still answers as settled.
func TestBoltCrashReleasesHolds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	cmd, lines := helper(t, "hold", path)
	if !lines.Scan() || lines.Text() != "holding" {
		t.Fatalf("helper says %q, want holding", lines.Text())
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
	wantAccount(t, s, "crash", c("6"), 0)
	checkInvariants(t, s, "crash")
	en, err := s.Settle(ctx, "crash", "settled", c("4"), ledger.Charge{})
	if err != nil || en.ID != "2" || en.Amount != -c("4") || en.BalanceAfter != c("6") {
		t.Fatalf("settle again after the crash = %+v, %v; want entry 2 of the first settle", en, err)
	}
	wantErr(t, s.Reserve(ctx, "crash", "settled", c("1"), time.Minute), ledger.ErrDuplicateHold)
	// The hold that was live is gone with its process.
	_, err = s.Settle(ctx, "crash", "held", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	mustReserve(t, s, "crash", "next", c("6"), time.Minute)
	wantAccount(t, s, "crash", c("6"), c("6"))
}

// TestBoltSettleWindowNeverOverspends races reserves against settles of
// one customer whose every settle charges exactly its hold: a hold must
// stop counting exactly when its charge is in the balance (never both,
// never neither), so the balance never goes below zero and every credit
// is spent.
func TestBoltSettleWindowNeverOverspends(t *testing.T) {
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const credits, workers = 60, 12
	mustCredit(t, s, "race", credits*money.Credit)
	var wg sync.WaitGroup
	var charged atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				hold := fmt.Sprintf("w%d-%d", w, i)
				err := s.Reserve(ctx, "race", hold, money.Credit, time.Minute)
				if errors.Is(err, ledger.ErrInsufficientCredits) {
					a, aerr := s.Account(ctx, "race")
					if aerr != nil {
						t.Error(aerr)
						return
					}
					if a.Reserved == 0 {
						return // everything is spent
					}
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Settle(ctx, "race", hold, money.Credit, ledger.Charge{}); err != nil {
					t.Error(err)
					return
				}
				charged.Add(1)
			}
		})
	}
	wg.Wait()
	if charged.Load() != credits {
		t.Errorf("%d settles charged; want exactly %d", charged.Load(), credits)
	}
	wantAccount(t, s, "race", 0, 0)
	checkInvariants(t, s, "race")
}

// TestBoltSettleReleaseOfExpiredHold races Settle against Release of holds
// that have expired: whichever wins, a repeated Settle agrees with the
// first (a charged hold never reads as released), and the balance has
// exactly the charges that were reported.
func TestBoltSettleReleaseOfExpiredHold(t *testing.T) {
	clock := newFakeClock()
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const holds = 200
	mustCredit(t, s, "late", holds*money.Credit)
	for i := range holds {
		mustReserve(t, s, "late", fmt.Sprintf("h%d", i), money.Credit, time.Minute)
	}
	clock.Advance(time.Minute) // every hold has expired
	results := make([]error, holds)
	var wg sync.WaitGroup
	for i := range holds {
		hold := fmt.Sprintf("h%d", i)
		wg.Go(func() { _, results[i] = s.Settle(ctx, "late", hold, money.Credit, ledger.Charge{}) })
		wg.Go(func() {
			if err := s.Release(ctx, "late", hold); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	charged := 0
	for i, first := range results {
		if first != nil && !errors.Is(first, ledger.ErrHoldReleased) {
			t.Fatalf("settle h%d: %v", i, first)
		}
		_, again := s.Settle(ctx, "late", fmt.Sprintf("h%d", i), money.Credit, ledger.Charge{})
		if (first == nil) != (again == nil) {
			t.Errorf("h%d: settle said %v, a repeat says %v", i, first, again)
		}
		if first == nil {
			charged++
		}
	}
	wantAccount(t, s, "late", money.Micros(holds-charged)*money.Credit, 0)
}

// TestBoltSettleReplacesForgottenRecord: a hold id whose settled record
// outlived the retention (and was not swept yet) may be reserved and
// settled again; the new record replaces the old one in the forget index
// too, so the index keeps one key per record, and the new settlement
// answers as settled for its own retention.
func TestBoltSettleReplacesForgottenRecord(t *testing.T) {
	clock := newFakeClock()
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{Now: clock.Now, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCredit(t, s, "again", 10*money.Credit)
	mustReserve(t, s, "again", "h1", money.Credit, time.Minute)
	first, err := s.Settle(ctx, "again", "h1", money.Credit, ledger.Charge{})
	if err != nil {
		t.Fatal(err)
	}
	firstAt := clock.Now().Add(time.Hour).UnixMilli()
	clock.Advance(time.Hour)
	mustReserve(t, s, "again", "h1", money.Credit, time.Minute)
	second, err := s.Settle(ctx, "again", "h1", 2*money.Credit, ledger.Charge{})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Fatalf("the second settlement answered with the first's entry %s", first.ID)
	}
	keys, err := s.ForgetKeys("again")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{firstAt + time.Hour.Milliseconds()}; !slices.Equal(keys["h1"], want) {
		t.Fatalf("forget index lists h1 at %v; want only %v", keys["h1"], want)
	}
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if again, err := s.Settle(ctx, "again", "h1", 2*money.Credit, ledger.Charge{}); err != nil || again != second {
		t.Fatalf("repeat settle after sweep = %+v, %v; want %+v", again, err, second)
	}
	wantAccount(t, s, "again", 7*money.Credit, 0)
}

// TestBoltClosedHoldsBounded: released holds are remembered in memory for
// max(their ttl, 5 min) only, and at most a fixed number of closed holds
// in all, so a storm of upstream errors (each releasing its hold) cannot
// grow memory without bound; a forgotten released hold still charges
// nothing, and an expired hold is still charged by a late Settle.
func TestBoltClosedHoldsBounded(t *testing.T) {
	clock := newFakeClock()
	const maxClosed = 50
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), ledger.WithMaxClosedHolds(ledger.Options{Now: clock.Now}, maxClosed))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCredit(t, s, "storm", c("1000"))

	// A released hold answers as released for max(ttl, 5 min), then as
	// unknown, and charges nothing either way.
	mustReserve(t, s, "storm", "short", c("1"), time.Minute)
	mustReserve(t, s, "storm", "long", c("1"), 10*time.Minute)
	for _, h := range []string{"short", "long"} {
		if err := s.Release(ctx, "storm", h); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(5*time.Minute - time.Millisecond)
	_, err = s.Settle(ctx, "storm", "short", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)
	clock.Advance(time.Millisecond)
	_, err = s.Settle(ctx, "storm", "short", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	_, err = s.Settle(ctx, "storm", "long", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)
	clock.Advance(5 * time.Minute)
	_, err = s.Settle(ctx, "storm", "long", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	wantErr(t, s.Extend(ctx, "storm", "long", time.Minute), ledger.ErrHoldNotFound)
	wantAccount(t, s, "storm", c("1000"), 0)

	// An expired hold is remembered for the retention: a Settle long
	// after its expiry (a request that outlived its renewals) charges it.
	mustReserve(t, s, "storm", "late", c("2"), time.Minute)
	clock.Advance(2 * time.Hour)
	if en := mustSettle(t, s, "storm", "late", c("3")); en.Amount != -c("3") {
		t.Fatalf("late settle of an expired hold = %+v; want a charge of 3", en)
	}

	// A storm of released holds: memory keeps at most maxClosed of them,
	// none is charged, and they are all gone once their keep has passed.
	const storm = 4 * maxClosed
	for i := range storm {
		h := fmt.Sprintf("err-%d", i)
		mustReserve(t, s, "storm", h, c("1"), time.Minute)
		if err := s.Release(ctx, "storm", h); err != nil {
			t.Fatal(err)
		}
	}
	kept, dropped := s.ClosedHolds()
	if kept > maxClosed || kept+dropped < storm {
		t.Fatalf("after %d releases: %d closed holds kept, %d dropped; want at most %d kept", storm, kept, dropped, maxClosed)
	}
	for i := range storm {
		_, err := s.Settle(ctx, "storm", fmt.Sprintf("err-%d", i), c("1"), ledger.Charge{})
		if !errors.Is(err, ledger.ErrHoldReleased) && !errors.Is(err, ledger.ErrHoldNotFound) {
			t.Fatalf("settle of released err-%d: %v", i, err)
		}
	}
	wantAccount(t, s, "storm", c("997"), 0)
	clock.Advance(5 * time.Minute)
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if kept, _ := s.ClosedHolds(); kept != 0 {
		t.Fatalf("%d closed holds still kept after their keep and a sweep; want 0", kept)
	}
}

// TestBoltEventsWithMemoryHolds: with events on, holds still live in
// memory (Reserve, Extend and Release commit nothing), a refusal commits
// balance.depleted once and later refusals nothing, and the events'
// available figures count the live holds in memory, without the hold a
// Settle just charged.
func TestBoltEventsWithMemoryHolds(t *testing.T) {
	opts := ledger.Options{Events: &ledger.EventOptions{LowBalance: []money.Micros{c("5")}}}
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCredit(t, s, "ev", c("10"))
	before := mustTxID(t, s)
	mustReserve(t, s, "ev", "a", c("3"), time.Minute)
	mustReserve(t, s, "ev", "b", c("4"), time.Minute)
	if err := s.Extend(ctx, "ev", "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := mustTxID(t, s); got != before {
		t.Fatalf("reserve and extend with events on committed %d transactions; want none", got-before)
	}
	for range 3 {
		err := s.Reserve(ctx, "ev", "big", c("4"), time.Minute)
		var ie *ledger.InsufficientCreditsError
		if !errors.As(err, &ie) || ie.Available != c("3") || ie.Reserved != c("7") {
			t.Fatalf("reserve beyond available = %v; want available 3, reserved 7", err)
		}
	}
	if got := mustTxID(t, s); got != before+1 {
		t.Fatalf("three refusals committed %d transactions; want 1 (balance.depleted)", got-before)
	}
	// Settling a for 3 leaves 7 with b's 4 held: available 3, below 5.
	mustSettle(t, s, "ev", "a", c("3"))
	if err := s.Release(ctx, "ev", "b"); err != nil {
		t.Fatal(err)
	}
	if got := mustTxID(t, s); got != before+2 {
		t.Fatalf("after a settle and a release, %d transactions; want 2", got-before)
	}
	page, err := s.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range page.Events {
		got = append(got, fmt.Sprintf("%s %s/%s %s", e.Type, e.Balance, e.Available, e.Amount))
	}
	want := []string{
		"credits.granted 10.000000/10.000000 10.000000",
		"balance.depleted 10.000000/3.000000 4.000000",
		"balance.low 7.000000/3.000000 5.000000",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
