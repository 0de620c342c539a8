package ledger

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// PutMeta implements Meta.
func (s *BoltStore) PutMeta(ctx context.Context, key, value string) error {
	if err := checkMeta(key, value); err != nil {
		return err
	}
	err := s.update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(bMeta)).Put([]byte(key), []byte(value))
	})
	if err != nil {
		return s.fail("put meta "+key, err)
	}
	return nil
}

// PutMetaIfAbsent implements Meta.
func (s *BoltStore) PutMetaIfAbsent(ctx context.Context, key, value string) (string, bool, error) {
	if err := checkMeta(key, value); err != nil {
		return "", false, err
	}
	var (
		current string
		stored  bool
	)
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(bMeta))
		if v := b.Get([]byte(key)); v != nil {
			current, stored = string(v), false
			return nil
		}
		current, stored = value, true
		return b.Put([]byte(key), []byte(value))
	})
	if err != nil {
		return "", false, s.fail("put meta "+key, err)
	}
	return current, stored, nil
}

// GetMeta implements Meta.
func (s *BoltStore) GetMeta(ctx context.Context, key string) (string, bool, error) {
	if err := checkID("meta key", key); err != nil {
		return "", false, err
	}
	var (
		value string
		found bool
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte(bMeta)).Get([]byte(key)); v != nil {
			value, found = string(v), true
		}
		return nil
	})
	if err != nil {
		return "", false, s.fail("get meta "+key, err)
	}
	return value, found, nil
}

// TryLock implements Meta. Expiry follows the store's clock.
func (s *BoltStore) TryLock(ctx context.Context, name string, ttl time.Duration) (string, bool, error) {
	if err := checkLock(name, ttl); err != nil {
		return "", false, err
	}
	token := newToken()
	now := s.now()
	nowMs, expires := unixMilli(now), expiryMilli(now, ttl)
	var ok bool
	err := s.update(func(tx *bbolt.Tx) error {
		ok = false
		b := tx.Bucket([]byte(bLocks))
		if v := b.Get([]byte(name)); v != nil {
			at, _, err := parseLock(v)
			if err != nil {
				return err
			}
			if at > nowMs {
				return nil
			}
		}
		ok = true
		return b.Put([]byte(name), []byte(fmt.Sprintf("%d %s", expires, token)))
	})
	if err != nil {
		return "", false, s.fail("lock "+name, err)
	}
	if !ok {
		return "", false, nil
	}
	return token, true, nil
}

// Unlock implements Meta.
func (s *BoltStore) Unlock(ctx context.Context, name, token string) error {
	if err := checkID("lock name", name); err != nil {
		return err
	}
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(bLocks))
		v := b.Get([]byte(name))
		if v == nil {
			return nil
		}
		_, holder, err := parseLock(v)
		if err != nil {
			return err
		}
		if holder != token {
			return nil
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return s.fail("unlock "+name, err)
	}
	return nil
}

func parseLock(v []byte) (int64, string, error) {
	var at int64
	var token string
	if _, err := fmt.Sscanf(string(v), "%d %s", &at, &token); err != nil {
		return 0, "", fmt.Errorf("%w: lock %q", errCorrupt, v)
	}
	return at, token, nil
}
