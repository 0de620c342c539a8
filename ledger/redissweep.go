package ledger

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Sweep implements Store. It finds customers with holds by scanning for
// their hold keys: on Redis Cluster on every master, since each master
// holds only its own slots.
func (s *RedisStore) Sweep(ctx context.Context) (int, error) {
	if err := s.guard(); err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	now := s.now()
	var expired atomic.Int64
	sweepNode := func(ctx context.Context, node redis.UniversalClient) error {
		seen := map[string]bool{}
		iter := node.ScanType(ctx, 0, sweepMatch, scanBatch, "zset").Iterator()
		for iter.Next(ctx) {
			customer, ok := customerOfKey(iter.Val())
			if !ok || seen[customer] {
				continue
			}
			seen[customer] = true
			n, err := s.sweepCustomer(ctx, customer, now)
			if err != nil {
				return err
			}
			expired.Add(int64(n))
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return sweepNode(ctx, node)
		})
	} else {
		err = sweepNode(ctx, s.client)
	}
	n := int(expired.Load())
	if n > 0 {
		s.log.Info("swept expired holds", zap.Int("holds", n))
	}
	if err != nil {
		return n, s.failWrite("sweep", err)
	}
	return n, nil
}

// sweepCustomer runs sweep.lua on customer until it reports nothing left.
// The script runs through the store's client, which routes it to the
// customer's slot wherever the scan found the key.
func (s *RedisStore) sweepCustomer(ctx context.Context, customer string, now time.Time) (int, error) {
	total := 0
	keys := customerKeys(customer)
	for {
		r, err := s.run(ctx, sweepScript, keys, unixMilli(now), s.retention.Milliseconds(), sweepBatch)
		if err != nil {
			return total, err
		}
		n, more := r.int(0), r.int(1)
		if r.err != nil {
			return total, r.err
		}
		total += int(n)
		if more == 0 {
			return total, nil
		}
	}
}
