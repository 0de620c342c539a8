package ledger

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Ready implements Store. After a commit failed (a full disk, an I/O
// error, a file that became read-only), it commits a small probe write of
// its own: not ready until one succeeds. Otherwise it reads and writes
// nothing beyond Ping.
func (s *BoltStore) Ready(ctx context.Context) error {
	if err := s.Ping(ctx); err != nil {
		return err
	}
	f := s.writes.last()
	if f == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	at := s.now()
	err := s.update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bProbe))
		if err != nil {
			return err
		}
		var v [8]byte
		putTime(v[:], unixMilli(at))
		return b.Put([]byte("at"), v[:])
	})
	if err != nil {
		return fmt.Errorf("%w: writes to %s fail since %s (%v); free disk space, or check the disk and the file's permissions",
			ErrStoreUnavailable, s.path, f.at.UTC().Format(time.RFC3339), err)
	}
	s.writes.clear(f)
	return nil
}
