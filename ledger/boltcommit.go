package ledger

import (
	"errors"
	"time"

	"go.etcd.io/bbolt"
)

// boltCall is one queued write.
type boltCall struct {
	fn func(*bbolt.Tx) error
	// committed, if set, runs on the writer's goroutine as soon as fn's
	// transaction is committed and fsynced, before the caller wakes.
	committed func()
	done      chan error
	// then, if set, takes the outcome instead of done: the caller did
	// not wait (enqueueThen).
	then func(error)
}

// errCommit marks an error of bbolt itself (a closed file, a failed write
// or fsync) rather than of a write function.
type errCommit struct{ err error }

func (e errCommit) Error() string { return e.err.Error() }
func (e errCommit) Unwrap() error { return e.err }

// update runs fn in a write transaction, possibly together with other
// writes queued meanwhile, and returns once the transaction is fsynced.
// fn may run more than once (if a neighbour in its batch fails, the batch
// is retried without it), so it must reset whatever it reports at start.
// It commits as soon as the writer is free, taking any settlements that
// wait for their gap along (see settleGap).
func (s *BoltStore) update(fn func(*bbolt.Tx) error) error {
	return s.enqueue(&boltCall{fn: fn, done: make(chan error, 1)}, false)
}

// pushSettle queues fn as update does, for a settlement: it may wait up
// to settleGap for others to share its commit. committed (when not nil)
// runs once fn's transaction is committed, without waiting for the
// caller's goroutine to be scheduled: what committed records is true
// from that moment. It returns the wait for the outcome, so that a
// caller may queue under a customer's mutex (in the order of the clock
// it read there) and wait once it let the mutex go.
func (s *BoltStore) pushSettle(fn func(*bbolt.Tx) error, committed func()) (wait func() error) {
	c := &boltCall{fn: fn, committed: committed, done: make(chan error, 1)}
	s.push(c, true)
	return func() error {
		err := <-c.done
		s.noteCommit(err)
		return err
	}
}

func (s *BoltStore) enqueue(c *boltCall, paced bool) error {
	s.push(c, paced)
	err := <-c.done
	s.noteCommit(err)
	return err
}

// noteCommit records a failed commit (an error of bbolt itself, not of a
// write function) for Ready.
func (s *BoltStore) noteCommit(err error) {
	var ce errCommit
	if errors.As(err, &ce) {
		s.writes.fail(err, s.now())
	}
}

// enqueueThen queues settlement c without waiting for it: then runs with
// its outcome once it is committed, on a goroutine that runs the
// continuations of one commit in turn (not the writer's: a continuation
// may take a customer's mutex, whose holder may be waiting for the
// writer).
func (s *BoltStore) enqueueThen(c *boltCall, then func(error)) {
	c.then = then
	s.push(c, true)
}

// queuedOutcome is a commit's result for one call whose caller did not wait.
type queuedOutcome struct {
	c   *boltCall
	err error
}

// deliver hands c its outcome, or adds it to later when c's caller did
// not wait.
func (s *BoltStore) deliver(c *boltCall, err error, later []queuedOutcome) []queuedOutcome {
	if c.then == nil {
		c.done <- err // enqueue notes it
		return later
	}
	s.noteCommit(err)
	return append(later, queuedOutcome{c, err})
}

// push queues c and makes sure the writer will run it.
func (s *BoltStore) push(c *boltCall, paced bool) {
	s.mu.Lock()
	s.queue = append(s.queue, c)
	if !paced {
		s.urgent = true
	}
	switch {
	case !s.writing:
		s.writing = true
		go s.writeLoop()
	case !paced:
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// settleGap is the least time between the starts of two commits that
// hold only settlements. A commit costs two fdatasyncs and the pages it
// dirties, whatever the number of writes in it, and a settlement is for a
// request that has already been answered (the proxy settles in the
// background), so under a steady stream of them waiting out the rest of
// the gap lets every settlement that comes meanwhile share one commit.
// A settlement after a quiet gap commits at once, and any other write
// (a credit, a suspension, a plan change) commits as soon as the writer
// is free, taking the waiting settlements along; so does a Reserve
// refused for credits that only settlements in flight hold (reserve).
//
// The price: a crash (kill -9, power loss) loses the charges of the
// requests answered in the last settleGap, less than credit leases on
// Redis lose (a flush interval, 50 ms by default); a clean shutdown loses
// nothing. The length: each customer's entries and settled markers live
// in buckets of their own, so a commit writes a few pages for every
// customer in it (about 0.25 pages per settlement with one busy customer,
// 2.2 with 32 customers at 10 ms), and a longer gap spreads them over
// more settlements. go run ./bench -store bolt -clients 32, alternated:
// 2 ms against 10 ms, JSON 0.54/0.56x -> 0.71/0.65x of the bare proxy,
// SSE 0.53/0.55x -> 0.69/0.70x; 10 ms against 25 ms with -customers 32,
// four runs each, added CPU per request JSON +66 to +93 us -> +38 to
// +59 us, SSE +114 to +176 us -> +71 to +162 us (one customer: no
// change beyond the machine's spread; 50 ms gained no more).
const settleGap = 25 * time.Millisecond

func (s *BoltStore) writeLoop() {
	var timer *time.Timer
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		var wait time.Duration
		if !s.urgent {
			// Pacing, not business time: the monotonic clock, whatever
			// clock the store was given.
			wait = settleGap - time.Since(s.lastCommit)
		}
		if wait > 0 {
			s.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-s.wake: // an urgent write: look again
				timer.Stop()
			}
			continue
		}
		batch := s.queue
		s.queue, s.urgent = nil, false
		s.mu.Unlock()
		s.lastCommit = time.Now()
		s.commit(batch)
	}
}

// commit runs batch in one transaction. A function that fails is taken
// out and run alone (so its error is its own), and the rest is retried.
func (s *BoltStore) commit(batch []*boltCall) {
	var later []queuedOutcome
	defer func() {
		if len(later) > 0 {
			go func() {
				for _, o := range later {
					o.c.then(o.err)
				}
			}()
		}
	}()
	for len(batch) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bbolt.Tx) error {
			for i, c := range batch {
				if err := c.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			c := batch[failed]
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			err := s.solo(c.fn)
			if err == nil && c.committed != nil {
				c.committed()
			}
			later = s.deliver(c, err, later)
			continue
		}
		if err != nil {
			err = errCommit{err}
		}
		// Every committed first, then the callers: a reader asks the
		// file about each hold whose charge is committed but not yet
		// marked.
		for _, c := range batch {
			if err == nil && c.committed != nil {
				c.committed()
			}
		}
		for _, c := range batch {
			later = s.deliver(c, err, later)
		}
		return
	}
}

func (s *BoltStore) solo(fn func(*bbolt.Tx) error) error {
	var fnErr error
	err := s.db.Update(func(tx *bbolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return errCommit{err}
	}
	return nil
}
