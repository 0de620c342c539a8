package proxy

import (
	"context"
	"sync"
	"time"
)

// storeCtx is the context of one reservation: the request's, bounded by
// store.timeout, so that a hung store costs the client a prompt 503 and
// not the Redis client's retries (DESIGN: fail closed). It answers as
// context.WithTimeout(parent, timeout) would, but arms nothing until a
// store waits on it: the embedded store and a credit lease answer from
// memory and at most look at Err, so most reservations never make its
// channel, its timer or its registration with the parent, which
// WithTimeout pays on every request (four allocations, and the parent's
// lock taken twice). A store that waits (a Redis round trip) calls Done
// and gets what WithTimeout would have given it.
//
// Cause is the one difference: context.Cause of a storeCtx that timed out
// reports its parent's cause (nil), not context.DeadlineExceeded; no
// store asks for it.
//
// The zero value is not usable; call start, and end once the store has
// answered.
type storeCtx struct {
	parent   context.Context
	deadline time.Time

	mu   sync.Mutex
	err  error         // set once: the parent's error, DeadlineExceeded, or Canceled by end
	done chan struct{} // made by the first Done; closed when err is set
	// stopParent and timer end err's sources once Done has armed them.
	stopParent func() bool
	timer      *time.Timer
}

// start makes c the context of a store call under parent that must end
// within timeout.
func (c *storeCtx) start(parent context.Context, timeout time.Duration) {
	c.parent, c.deadline = parent, time.Now().Add(timeout)
}

// Deadline implements context.Context.
func (c *storeCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// Value implements context.Context.
func (c *storeCtx) Value(key any) any { return c.parent.Value(key) }

// Err implements context.Context. Without a Done channel it is decided
// on the spot, from the parent and the clock, and kept once set.
func (c *storeCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && c.done == nil {
		c.err = c.due()
	}
	return c.err
}

// Done implements context.Context. The first call arms what closes the
// channel: the parent's end and the deadline.
func (c *storeCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err == nil {
		c.err = c.due()
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	c.stopParent = context.AfterFunc(c.parent, func() { c.fail(c.parent.Err()) })
	c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.fail(context.DeadlineExceeded) })
	return c.done
}

// due returns the error c has by now without a channel: the parent's,
// or DeadlineExceeded past the deadline. c.mu is held.
func (c *storeCtx) due() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// fail sets c's error, once, and closes its channel.
func (c *storeCtx) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setErr(err)
}

// setErr sets c's error unless it is set, and closes the channel if Done
// made it. c.mu is held.
func (c *storeCtx) setErr(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
}

// end ends c, as WithTimeout's cancel does, and releases what Done armed.
func (c *storeCtx) end() {
	c.mu.Lock()
	c.setErr(context.Canceled)
	stop, timer := c.stopParent, c.timer
	c.mu.Unlock()
	if stop != nil {
		stop()
		timer.Stop()
	}
}
