package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// The journal's buckets, created by the first append:
//
//	journal/records/<id>               JSON boltJournalValue
//	journal/customers/<customer>\x00<id> index of the records of a customer
//	journal/once/<once>                <id> of the record added with once
//
//	journal/count                      8 bytes: how many records there are
//
// <id> is 16 bytes: the millisecond and the sequence number, big-endian,
// so that records sort by age. The newest id (the largest key of
// records) places the next record.
const (
	kJournalCount     = "count"
	bJournal          = "journal"
	bJournalRecords   = "records"
	bJournalCustomers = "customers"
	bJournalOnce      = "once"
)

// boltJournalValue is a record as the bolt store keeps it.
type boltJournalValue struct {
	Customer string `json:"c,omitempty"`
	Type     string `json:"t"`
	Once     string `json:"o,omitempty"`
	Data     []byte `json:"d"`
}

func (id journalID) key() []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k[0:], uint64(id.ms))
	binary.BigEndian.PutUint64(k[8:], uint64(id.seq))
	return k
}

func journalIDOfKey(k []byte) (journalID, error) {
	if len(k) != 16 {
		return journalID{}, fmt.Errorf("%w: journal key %x", errCorrupt, k)
	}
	return journalID{ms: int64(binary.BigEndian.Uint64(k[0:])), seq: int64(binary.BigEndian.Uint64(k[8:]))}, nil
}

func journalCustomerKey(customer string, id []byte) []byte {
	k := make([]byte, 0, len(customer)+1+len(id))
	k = append(k, customer...)
	k = append(k, 0)
	return append(k, id...)
}

// AppendJournal implements Journal.
func (s *BoltStore) AppendJournal(ctx context.Context, r JournalRecord, once string) (bool, error) {
	if err := checkJournalRecord(r, once); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	v, err := json.Marshal(boltJournalValue{Customer: r.Customer, Type: r.Type, Once: once, Data: r.Data})
	if err != nil {
		return false, fmt.Errorf("append journal: %w", err)
	}
	atMs, cutoff := unixMilli(r.At), journalCutoff(s.now())
	var appended bool
	err = s.update(func(tx *bbolt.Tx) error {
		appended = false
		root, err := tx.CreateBucketIfNotExists([]byte(bJournal))
		if err != nil {
			return err
		}
		var b [3]*bbolt.Bucket
		for i, name := range []string{bJournalRecords, bJournalCustomers, bJournalOnce} {
			if b[i], err = root.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		records, customers, onces := b[0], b[1], b[2]
		// Forget first, so that the once key of a forgotten record is
		// free; then make room for the record, if it is added.
		var n uint64
		if c := root.Get([]byte(kJournalCount)); len(c) == 8 {
			n = binary.BigEndian.Uint64(c)
		}
		if n, err = trimBoltJournal(records, customers, onces, n, cutoff, s.journalMax); err != nil {
			return err
		}
		if err := root.Put([]byte(kJournalCount), binary.BigEndian.AppendUint64(nil, n)); err != nil {
			return err
		}
		if once != "" && onces.Get([]byte(once)) != nil {
			return nil
		}
		if n, err = trimBoltJournal(records, customers, onces, n, cutoff, s.journalMax-1); err != nil {
			return err
		}
		var last *journalID
		if k, _ := records.Cursor().Last(); k != nil {
			id, err := journalIDOfKey(k)
			if err != nil {
				return err
			}
			last = &id
		}
		id := nextJournalID(atMs, last)
		if id.seq > maxJournalSeq {
			return fmt.Errorf("%w: more than %d journal records in one millisecond", ErrInvalidArgument, int64(maxJournalSeq))
		}
		key := id.key()
		if err := records.Put(key, v); err != nil {
			return err
		}
		if r.Customer != "" {
			if err := customers.Put(journalCustomerKey(r.Customer, key), nil); err != nil {
				return err
			}
		}
		if once != "" {
			if err := onces.Put([]byte(once), key); err != nil {
				return err
			}
		}
		appended = true
		return root.Put([]byte(kJournalCount), binary.BigEndian.AppendUint64(nil, n+1))
	})
	if err != nil {
		return false, s.fail("append journal", err)
	}
	return appended, nil
}

// trimBoltJournal forgets the records before cutoff and the oldest beyond
// keep, with their index entries, and returns how many of the n records
// are left.
func trimBoltJournal(records, customers, onces *bbolt.Bucket, n uint64, cutoff int64, keep int) (uint64, error) {
	c := records.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		id, err := journalIDOfKey(k)
		if err != nil {
			return 0, err
		}
		if n <= uint64(keep) && id.ms >= cutoff {
			return n, nil
		}
		var val boltJournalValue
		if err := json.Unmarshal(v, &val); err != nil {
			return 0, fmt.Errorf("%w: journal record %s: %v", errCorrupt, id, err)
		}
		if val.Customer != "" {
			if err := customers.Delete(journalCustomerKey(val.Customer, k)); err != nil {
				return 0, err
			}
		}
		if val.Once != "" && bytes.Equal(onces.Get([]byte(val.Once)), k) {
			if err := onces.Delete([]byte(val.Once)); err != nil {
				return 0, err
			}
		}
		if err := records.Delete(k); err != nil {
			return 0, err
		}
		if n > 0 {
			n--
		}
	}
	return 0, nil
}

// ReadJournal implements Journal.
func (s *BoltStore) ReadJournal(ctx context.Context, q JournalQuery) (JournalPage, error) {
	limit, before, err := checkJournalQuery(q)
	if err != nil {
		return JournalPage{}, err
	}
	if err := ctx.Err(); err != nil {
		return JournalPage{}, err
	}
	cutoff := journalCutoff(s.now())
	var page JournalPage
	err = s.db.View(func(tx *bbolt.Tx) error {
		root := tx.Bucket([]byte(bJournal))
		if root == nil {
			return nil
		}
		records, customers := root.Bucket([]byte(bJournalRecords)), root.Bucket([]byte(bJournalCustomers))
		if records == nil || customers == nil {
			return fmt.Errorf("%w: journal buckets missing", errCorrupt)
		}
		// next walks the candidate keys newest first: every record, or
		// the customer's index.
		var next func() []byte
		if q.Customer == "" {
			c := records.Cursor()
			var k []byte
			if before == nil {
				k, _ = c.Last()
			} else {
				k = seekBefore(c, before.key())
			}
			next = func() []byte {
				out := k
				k, _ = c.Prev()
				return out
			}
		} else {
			prefix := journalCustomerKey(q.Customer, nil)
			c := customers.Cursor()
			end := append(append([]byte(nil), prefix...), 0xff)
			if before != nil {
				end = journalCustomerKey(q.Customer, before.key())
			}
			k := seekBefore(c, end)
			next = func() []byte {
				if k == nil || !bytes.HasPrefix(k, prefix) {
					return nil
				}
				out := k[len(prefix):]
				k, _ = c.Prev()
				return out
			}
		}
		for k := next(); k != nil; k = next() {
			id, err := journalIDOfKey(k)
			if err != nil {
				return err
			}
			if id.ms < cutoff {
				break
			}
			v := records.Get(k)
			if v == nil {
				return fmt.Errorf("%w: journal index names the missing record %s", errCorrupt, id)
			}
			var val boltJournalValue
			if err := json.Unmarshal(v, &val); err != nil {
				return fmt.Errorf("%w: journal record %s: %v", errCorrupt, id, err)
			}
			if q.Type != "" && val.Type != q.Type {
				continue
			}
			if len(page.Records) == limit {
				page.Next = page.Records[limit-1].ID
				break
			}
			page.Records = append(page.Records, journalRecord(id, val.Customer, val.Type, val.Data))
		}
		return nil
	})
	if err != nil {
		return JournalPage{}, s.fail("read journal", err)
	}
	return page, nil
}

// seekBefore positions c on the largest key below end and returns it, or
// nil if there is none.
func seekBefore(c *bbolt.Cursor, end []byte) []byte {
	k, _ := c.Seek(end)
	if k == nil {
		k, _ = c.Last()
		if k != nil && bytes.Compare(k, end) >= 0 {
			k, _ = c.Prev()
		}
		return k
	}
	k, _ = c.Prev()
	return k
}

// journalRecord builds a record read back; data is copied out of the
// store's memory.
func journalRecord(id journalID, customer, typ string, data []byte) JournalRecord {
	return JournalRecord{
		ID:       id.String(),
		At:       time.UnixMilli(id.ms).UTC(),
		Customer: customer,
		Type:     typ,
		Data:     append([]byte(nil), data...),
	}
}
