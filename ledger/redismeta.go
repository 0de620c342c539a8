package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// PutMeta implements Meta.
func (s *RedisStore) PutMeta(ctx context.Context, key, value string) error {
	if err := checkMeta(key, value); err != nil {
		return err
	}
	if err := s.guard(); err != nil {
		return fmt.Errorf("put meta %s: %w", key, err)
	}
	if err := s.client.Set(ctx, metaPrefix+key, value, 0).Err(); err != nil {
		return s.failWrite("put meta "+key, err)
	}
	return nil
}

// PutMetaIfAbsent implements Meta.
func (s *RedisStore) PutMetaIfAbsent(ctx context.Context, key, value string) (string, bool, error) {
	if err := checkMeta(key, value); err != nil {
		return "", false, err
	}
	v, err := putMetaIfAbsentScript.Run(ctx, s.client, []string{metaPrefix + key}, value).Result()
	if err != nil {
		return "", false, s.fail("put meta "+key, err)
	}
	vals, ok := v.([]any)
	if !ok {
		return "", false, fmt.Errorf("put meta %s: %w: script reply %T, want an array", key, errCorrupt, v)
	}
	r := &reply{vals: vals}
	stored, current := r.int(0), r.str(1)
	if r.err != nil {
		return "", false, fmt.Errorf("put meta %s: %w", key, r.err)
	}
	return current, stored == 1, nil
}

// GetMeta implements Meta.
func (s *RedisStore) GetMeta(ctx context.Context, key string) (string, bool, error) {
	if err := checkID("meta key", key); err != nil {
		return "", false, err
	}
	if err := s.guard(); err != nil {
		return "", false, fmt.Errorf("get meta %s: %w", key, err)
	}
	v, err := s.client.Get(ctx, metaPrefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.fail("get meta "+key, err)
	}
	return v, true, nil
}

// TryLock implements Meta. Expiry follows the store's clock; the key also
// carries a Redis PX of ttl so that a lock whose holder vanished is
// dropped by Redis itself.
func (s *RedisStore) TryLock(ctx context.Context, name string, ttl time.Duration) (string, bool, error) {
	if err := checkLock(name, ttl); err != nil {
		return "", false, err
	}
	if err := s.guard(); err != nil {
		return "", false, fmt.Errorf("lock %s: %w", name, err)
	}
	token := newToken()
	now := s.now()
	ok, err := trylockScript.Run(ctx, s.client, []string{lockPrefix + name},
		token, unixMilli(now), expiryMilli(now, ttl), ttl.Milliseconds()).Int64()
	if err != nil {
		return "", false, s.failWrite("lock "+name, err)
	}
	if ok != 1 {
		return "", false, nil
	}
	return token, true, nil
}

// Unlock implements Meta.
func (s *RedisStore) Unlock(ctx context.Context, name, token string) error {
	if err := checkID("lock name", name); err != nil {
		return err
	}
	if _, err := unlockScript.Run(ctx, s.client, []string{lockPrefix + name}, token).Int64(); err != nil {
		return s.failWrite("unlock "+name, err)
	}
	return nil
}
