package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A storeCtx answers as context.WithTimeout would, whether or not Done
// was ever called.
func TestStoreCtxDeadlineWithoutDone(t *testing.T) {
	var c storeCtx
	c.start(context.Background(), time.Hour)
	if err := c.Err(); err != nil {
		t.Fatalf("Err before the deadline: %v", err)
	}
	if d, ok := c.Deadline(); !ok || time.Until(d) > time.Hour || time.Until(d) < 59*time.Minute {
		t.Errorf("Deadline %v %v; want in an hour", d, ok)
	}
	c.end()

	c = storeCtx{}
	c.start(context.Background(), time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err past the deadline: %v", err)
	}
	select {
	case <-c.Done(): // armed after the deadline: closed at once
	default:
		t.Fatal("Done not closed past the deadline")
	}
	c.end()
	if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Err after end: %v; the first error stays", err)
	}
}

// waitErr waits (at most 5 s) for done, c's Done channel, to close
// when, then checks that c's Err is want.
func waitErr(t *testing.T, c *storeCtx, done <-chan struct{}, want error, when string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("Done not closed %s", when)
	}
	if err := c.Err(); !errors.Is(err, want) {
		t.Errorf("Err %v; want %v", err, want)
	}
}

func TestStoreCtxDoneAtDeadline(t *testing.T) {
	var c storeCtx
	c.start(context.Background(), 20*time.Millisecond)
	done := c.Done()
	if c.Done() != done {
		t.Fatal("Done returned another channel")
	}
	waitErr(t, &c, done, context.DeadlineExceeded, "at the deadline")
	c.end()
}

func TestStoreCtxFollowsParent(t *testing.T) {
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	var c storeCtx
	c.start(parent, time.Hour)
	if c.Value(key{}) != "v" {
		t.Error("Value does not reach the parent")
	}
	done := c.Done()
	cancel()
	waitErr(t, &c, done, context.Canceled, "when the parent ended")
	c.end()

	// Without Done, the parent's end shows in Err.
	parent, cancel = context.WithCancel(context.Background())
	c = storeCtx{}
	c.start(parent, time.Hour)
	cancel()
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err without Done after the parent ended: %v", err)
	}
}

func TestStoreCtxEarlierParentDeadline(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	pd, _ := parent.Deadline()
	var c storeCtx
	c.start(parent, time.Hour)
	if d, ok := c.Deadline(); !ok || !d.Equal(pd) {
		t.Errorf("Deadline %v; want the parent's %v", d, pd)
	}
}

// end cancels as WithTimeout's cancel does and disarms what Done armed.
func TestStoreCtxEnd(t *testing.T) {
	var c storeCtx
	c.start(context.Background(), time.Hour)
	c.end()
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err after end: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done open after end")
	}
	if c.timer != nil {
		t.Error("Done after end armed a timer")
	}

	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	c = storeCtx{}
	c.start(parent, time.Hour)
	done := c.Done()
	c.end()
	waitErr(t, &c, done, context.Canceled, "by end")
	if c.timer.Stop() {
		t.Error("end left the deadline's timer armed")
	}
	if c.stopParent() {
		t.Error("end left the parent's AfterFunc registered")
	}
}

// A parent that has already ended ends the storeCtx at once.
func TestStoreCtxParentAlreadyEnded(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	var c storeCtx
	c.start(parent, time.Hour)
	select {
	case <-c.Done():
	default:
		t.Fatal("Done open under an ended parent")
	}
	if err := c.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err %v", err)
	}
	c.end()
}

// BenchmarkStoreCtx compares a reservation's context with the
// context.WithTimeout it replaces, under a cancelable parent as
// net/http gives, when the store only looks at Err (the embedded store,
// a lease).
func BenchmarkStoreCtx(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(parent, time.Second)
			_ = ctx.Err()
			cancel()
		}
	})
	b.Run("storeCtx", func(b *testing.B) {
		b.ReportAllocs()
		var ex exchange
		for b.Loop() {
			ex.rctx = storeCtx{}
			ex.rctx.start(parent, time.Second)
			_ = ex.rctx.Err()
			ex.rctx.end()
		}
	})
}
