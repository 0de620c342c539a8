package ledger_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// swapFD makes the descriptor of f refer to name opened with flag, as if
// the file had been reopened under the store: read-only makes every write
// fail (EBADF) as a full or read-only disk would, read-write heals it.
func swapFD(t *testing.T, f *os.File, name string, flag int) {
	t.Helper()
	g, err := os.OpenFile(name, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := syscall.Dup3(int(g.Fd()), int(f.Fd()), syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// openSwappable opens a BoltStore in a new file and returns it, the
// file's path and the file it writes, for swapFD; t closes the store.
func openSwappable(t *testing.T) (*ledger.BoltStore, string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	var file *os.File
	open := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	s, err := ledger.OpenBolt(path, ledger.WithOpenFile(ledger.Options{}, open))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path, file
}

// TestBoltReadyWhenWritesFail: a store whose commits fail still answers
// reads and pings, but is not ready, and says why and what to do; once
// writes work again its next readiness check (which then writes a probe)
// passes, with no traffic needed.
func TestBoltReadyWhenWritesFail(t *testing.T) {
	ctx := t.Context()
	s, path, file := openSwappable(t)
	if _, err := s.Credit(ctx, ledger.Credit{Customer: "c", Amount: 5 * money.Credit, Kind: ledger.KindGrant, Key: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready on a healthy store: %v", err)
	}

	swapFD(t, file, path, os.O_RDONLY)
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready before any write failed: %v (a healthy store writes no probe)", err)
	}
	_, err := s.Credit(ctx, ledger.Credit{Customer: "c", Amount: money.Credit, Kind: ledger.KindGrant, Key: "k2"})
	if !errors.Is(err, ledger.ErrStoreUnavailable) {
		t.Fatalf("Credit with writes failing: %v; want ErrStoreUnavailable", err)
	}
	if a, err := s.Account(ctx, "c"); err != nil || a.Balance != 5*money.Credit {
		t.Fatalf("Account = %+v, %v; reads still work", a, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	err = s.Ready(ctx)
	if !errors.Is(err, ledger.ErrStoreUnavailable) || !strings.Contains(err.Error(), "writes to "+path+" fail since ") ||
		!strings.HasSuffix(err.Error(), "; free disk space, or check the disk and the file's permissions") {
		t.Fatalf("Ready with writes failing: %v", err)
	}

	swapFD(t, file, path, os.O_RDWR)
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready once writes work again: %v", err)
	}
	if _, err := s.Credit(ctx, ledger.Credit{Customer: "c", Amount: money.Credit, Kind: ledger.KindGrant, Key: "k2"}); err != nil {
		t.Fatal(err)
	}
}

// TestBoltEventOnlyWithCommit: a credit whose commit fails writes no
// event; the same credit retried once writes work has exactly one.
func TestBoltEventOnlyWithCommit(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	var file *os.File
	open := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	opts := ledger.Options{Events: &ledger.EventOptions{}}
	s, err := ledger.OpenBolt(path, ledger.WithOpenFile(opts, open))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cr := ledger.Credit{Customer: "c", Amount: 5 * money.Credit, Kind: ledger.KindGrant, Key: "k1"}
	swapFD(t, file, path, os.O_RDONLY)
	if _, err := s.Credit(ctx, cr); !errors.Is(err, ledger.ErrStoreUnavailable) {
		t.Fatalf("Credit with writes failing: %v", err)
	}
	if p, err := s.Events(ctx, 0, 10); err != nil || len(p.Events) != 0 {
		t.Fatalf("events after a failed commit: %+v, %v", p, err)
	}
	swapFD(t, file, path, os.O_RDWR)
	if _, err := s.Credit(ctx, cr); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Events(ctx, 0, 10); err != nil || len(p.Events) != 1 || p.Events[0].Type != ledger.EventCreditsGranted {
		t.Fatalf("events after the retried credit: %+v, %v", p, err)
	}
}

// TestBoltQueuedSettlementWhenWritesFail: a queued settlement whose
// commit fails tells its caller so (ErrStoreUnavailable), charges
// nothing, and leaves the hold to a Settle, which charges it once writes
// work again.
func TestBoltQueuedSettlementWhenWritesFail(t *testing.T) {
	ctx := t.Context()
	s, path, file := openSwappable(t)
	if _, err := s.Credit(ctx, ledger.Credit{Customer: "c", Amount: 5 * money.Credit, Kind: ledger.KindGrant, Key: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, "c", "h1", money.Credit, time.Minute); err != nil {
		t.Fatal(err)
	}
	swapFD(t, file, path, os.O_RDONLY)
	got := make(chan error, 2)
	if !s.QueueSettle("c", "h1", money.Credit, ledger.Charge{Reference: "h1"}, func(_ ledger.Entry, err error) { got <- err }) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	select {
	case err := <-got:
		if !errors.Is(err, ledger.ErrStoreUnavailable) {
			t.Fatalf("done got %v; want ErrStoreUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("done did not run within 5s of a failed commit")
	}
	swapFD(t, file, path, os.O_RDWR)
	e, err := s.Settle(ctx, "c", "h1", money.Credit, ledger.Charge{Reference: "h1"})
	if err != nil || e.Amount != -money.Credit || e.BalanceAfter != 4*money.Credit {
		t.Fatalf("Settle once writes work: %+v, %v; want the one charge", e, err)
	}
	if a, err := s.Account(ctx, "c"); err != nil || a.Balance != 4*money.Credit || a.Reserved != 0 {
		t.Errorf("account %+v, %v; want balance 4 and nothing reserved", a, err)
	}
	if len(got) != 0 {
		t.Errorf("done ran again: %v", <-got)
	}
}
