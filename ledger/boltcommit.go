package ledger

import (
	"errors"

	"go.etcd.io/bbolt"
)

// boltCall is one queued write.
type boltCall struct {
	fn   func(*bbolt.Tx) error
	done chan error
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
	c := &boltCall{fn: fn, done: make(chan error, 1)}
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

func (s *BoltStore) writeLoop() {
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
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
			c.done <- s.solo(c.fn)
			continue
		}
		if err != nil {
			err = errCommit{err}
		}
		for _, c := range batch {
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
