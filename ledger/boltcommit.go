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
func (s *BoltStore) update(fn func(*bbolt.Tx) error) error {
	return s.updateThen(fn, nil)
}

// updateThen is update, calling committed (when not nil) once fn's
// transaction is committed, without waiting for the caller's goroutine
// to be scheduled: what committed records is true from that moment.
func (s *BoltStore) updateThen(fn func(*bbolt.Tx) error, committed func()) error {
	c := &boltCall{fn: fn, committed: committed, done: make(chan error, 1)}
	s.mu.Lock()
	s.queue = append(s.queue, c)
	if !s.writing {
		s.writing = true
		go s.writeLoop()
	}
	s.mu.Unlock()
	err := <-c.done
	var ce errCommit
	if errors.As(err, &ce) {
		s.writes.fail(err, s.now())
	}
	return err
}

// commitGap is the least time between the starts of two commits. A
// commit costs two fdatasyncs and the pages it dirties, whatever the
// number of writes in it; under a steady stream of settlements (each one
// a request that has already been answered) waiting out the rest of the
// gap lets the writes that come meanwhile share that cost. A write after
// a quiet gap commits at once, so a lone Credit or Settle waits for its
// own fsync only.
const commitGap = 2 * time.Millisecond

func (s *BoltStore) writeLoop() {
	for {
		// Pacing, not business time: the monotonic clock, whatever clock
		// the store was given.
		if wait := commitGap - time.Since(s.lastCommit); wait > 0 {
			time.Sleep(wait)
		}
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.lastCommit = time.Now()
		s.commit(batch)
	}
}

// commit runs batch in one transaction. A function that fails is taken
// out and run alone (so its error is its own), and the rest is retried.
func (s *BoltStore) commit(batch []*boltCall) {
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
			c.done <- err
			continue
		}
		if err != nil {
			err = errCommit{err}
		}
		for _, c := range batch {
			if err == nil && c.committed != nil {
				c.committed()
			}
			c.done <- err
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
