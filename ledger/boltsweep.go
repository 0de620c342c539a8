package ledger

import (
	"bytes"
	"context"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Sweep implements Store. It works through the expiry and forget indexes
// in transactions of at most sweepBatch holds each.
func (s *BoltStore) Sweep(ctx context.Context) (int, error) {
	nowMs := unixMilli(s.now())
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var expired int
		var more bool
		err := s.update(func(tx *bbolt.Tx) error {
			expired, more = 0, false
			n, full, err := sweepExpiry(tx, nowMs, s.retention)
			if err != nil {
				return err
			}
			pruned, err := sweepForget(tx, nowMs)
			if err != nil {
				return err
			}
			expired, more = n, full || pruned >= sweepBatch
			return nil
		})
		if err != nil {
			return total, s.fail("sweep", err)
		}
		total += expired
		if !more {
			break
		}
	}
	if total > 0 {
		s.log.Info("swept expired holds", zap.Int("holds", total))
	}
	return total, nil
}

// sweepExpiry expires up to sweepBatch holds whose expiry is at or before
// nowMs, returning how many it expired and whether the batch was full.
func sweepExpiry(tx *bbolt.Tx, nowMs int64, retention time.Duration) (int, bool, error) {
	idx := tx.Bucket([]byte(bExpiry))
	keys := dueKeys(idx, nowMs)
	expired := 0
	for _, k := range keys {
		at, customer, holdID, err := parseIndexKey(k)
		if err != nil {
			return 0, false, err
		}
		if err := idx.Delete(k); err != nil {
			return 0, false, err
		}
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return 0, false, err
		}
		if c == nil {
			continue
		}
		v := c.holds.Get([]byte(holdID))
		if v == nil {
			continue
		}
		if _, expiry, err := decodeHold(v); err != nil {
			return 0, false, err
		} else if expiry != at {
			continue
		}
		if err := c.dropHold(holdID); err != nil {
			return 0, false, err
		}
		if err := c.closeHold(holdID, holdExpired, nowMs, retention, 0); err != nil {
			return 0, false, err
		}
		expired++
	}
	return expired, len(keys) >= sweepBatch, nil
}

// sweepForget forgets up to sweepBatch closed holds whose retention ended.
func sweepForget(tx *bbolt.Tx, nowMs int64) (int, error) {
	idx := tx.Bucket([]byte(bForget))
	keys := dueKeys(idx, nowMs)
	for _, k := range keys {
		at, customer, holdID, err := parseIndexKey(k)
		if err != nil {
			return 0, err
		}
		if err := idx.Delete(k); err != nil {
			return 0, err
		}
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return 0, err
		}
		if c == nil {
			continue
		}
		if v := c.closed.Get([]byte(holdID)); v != nil {
			_, forgetAt, _, err := decodeClosed(v)
			if err != nil {
				return 0, err
			}
			if forgetAt == at {
				if err := c.closed.Delete([]byte(holdID)); err != nil {
					return 0, err
				}
			}
		}
	}
	return len(keys), nil
}

// dueKeys returns copies of up to sweepBatch keys of an index bucket whose
// time is at or before nowMs. Keys are copied and deleted afterwards
// because deleting under a bbolt cursor skips keys.
func dueKeys(idx *bbolt.Bucket, nowMs int64) [][]byte {
	var keys [][]byte
	cur := idx.Cursor()
	for k, _ := cur.First(); k != nil && len(keys) < sweepBatch; k, _ = cur.Next() {
		if len(k) < 8 || getTime(k[:8]) > nowMs {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}
