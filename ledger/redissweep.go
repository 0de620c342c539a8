package ledger

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Sweep implements Store. It finds customers with holds or expiring lots
// by scanning for their hold and lot expiry keys: on Redis Cluster on
// every master, since each master holds only its own slots.
func (s *RedisStore) Sweep(ctx context.Context) (int, error) {
	if err := s.guard(); err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	now := s.now()
	var expired, lots atomic.Int64
	sweepNode := func(ctx context.Context, node redis.UniversalClient) error {
		seen := map[string]bool{}
		iter := node.ScanType(ctx, 0, sweepMatch, scanBatch, "zset").Iterator()
		for iter.Next(ctx) {
			customer, ok := customerOfKey(iter.Val())
			if !ok || seen[customer] {
				continue
			}
			seen[customer] = true
			n, l, err := s.sweepCustomer(ctx, customer, now)
			expired.Add(int64(n))
			lots.Add(int64(l))
			if err != nil {
				return err
			}
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
	if l := lots.Load(); l > 0 {
		s.log.Info("swept expired lots", zap.Int64("lots", l))
	}
	if err != nil {
		return n, s.failWrite("sweep", err)
	}
	return n, nil
}

// sweepCustomer runs sweep.lua on customer until it reports nothing left,
// and returns how many holds and lots it expired. The script runs through
// the store's client, which routes it to the customer's slot wherever the
// scan found the key.
func (s *RedisStore) sweepCustomer(ctx context.Context, customer string, now time.Time) (holds, lots int, err error) {
	keys := customerKeys(customer)
	for {
		r, err := s.run(ctx, sweepScript, keys, unixMilli(now), s.retention.Milliseconds(), sweepBatch)
		if err != nil {
			return holds, lots, err
		}
		n, more, l := r.int(0), r.int(1), r.int(2)
		if r.err != nil {
			return holds, lots, r.err
		}
		holds += int(n)
		lots += int(l)
		if more == 0 {
			return holds, lots, nil
		}
	}
}
