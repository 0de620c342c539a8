package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Sweep implements Store. It expires and forgets the holds in memory,
// then works through the lot expiry and forget indexes in transactions of
// at most sweepBatch lots and settled holds each.
func (s *BoltStore) Sweep(ctx context.Context) (int, error) {
	if err := s.open(); err != nil {
		return 0, s.fail("sweep", err)
	}
	nowMs, retMs := unixMilli(s.now()), s.retention.Milliseconds()
	total, totalLots := 0, 0
	for _, id := range s.holds.customers() {
		mc := s.holds.lock(id)
		total += mc.expire(nowMs, retMs)
		mc.forgetClosed(nowMs)
		s.holds.unlock(id, mc)
	}
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var lots int
		var more bool
		err := s.update(func(tx *bbolt.Tx) error {
			lots, more = 0, false
			l, fullLots, err := s.sweepLots(tx, nowMs)
			if err != nil {
				return err
			}
			pruned, err := sweepForget(tx, nowMs)
			if err != nil {
				return err
			}
			lots, more = l, fullLots || pruned >= sweepBatch
			return nil
		})
		if err != nil {
			return total, s.fail("sweep", err)
		}
		totalLots += lots
		if !more {
			break
		}
	}
	if total > 0 {
		s.log.Info("swept expired holds", zap.Int("holds", total))
	}
	if totalLots > 0 {
		s.log.Info("swept expired lots", zap.Int("lots", totalLots))
	}
	return total, nil
}

// sweepLots expires up to sweepBatch lots whose expiry is at or before
// nowMs, returning how many it expired and whether the batch was full.
// The index orders them by expiry, then customer, then age, so each
// customer's lots expire in the order expireLots would take them.
func (s *BoltStore) sweepLots(tx *bbolt.Tx, nowMs int64) (int, bool, error) {
	idx := tx.Bucket([]byte(bLotExpiry))
	keys := dueKeys(idx, nowMs)
	expired := 0
	touched := map[string]*boltCustomer{}
	for _, k := range keys {
		at, customer, idText, err := parseIndexKey(k)
		if err != nil {
			return 0, false, err
		}
		if len(idText) != 8 {
			return 0, false, fmt.Errorf("%w: lot index key %q", errCorrupt, k)
		}
		id := int64(binary.BigEndian.Uint64([]byte(idText)))
		c := touched[customer]
		if c == nil {
			if c, err = openCustomer(tx, customer, false); err == nil {
				c, err = s.withEvents(c, nowMs)
			}
			if err != nil {
				return 0, false, err
			}
		}
		var l lotRecord
		ok := false
		if c != nil {
			if l, ok, err = c.getLot(id); err != nil {
				return 0, false, err
			}
		}
		if !ok || l.expires != at {
			// Not a lot that is due: a stale index entry.
			if err := idx.Delete(k); err != nil {
				return 0, false, err
			}
			continue
		}
		if err := c.expireLot(id, l); err != nil {
			return 0, false, err
		}
		touched[customer] = c
		expired++
	}
	for _, c := range touched {
		if err := c.checkLow(-1); err != nil {
			return 0, false, err
		}
		if err := c.resetLotBound(); err != nil {
			return 0, false, err
		}
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
