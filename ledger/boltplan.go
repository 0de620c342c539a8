package ledger

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/money"
)

// kPlan is the key of a customer's plan inputs in its bucket:
// version (8 bytes), subscription order (8), the subscription's length
// (4), the subscription, then the override.
const kPlan = "plan"

func (c *boltCustomer) plan() (PlanState, error) {
	v := c.b.Get([]byte(kPlan))
	if v == nil {
		return PlanState{}, nil
	}
	if len(v) < 20 {
		return PlanState{}, fmt.Errorf("%w: plan of %s is %d bytes", errCorrupt, c.id, len(v))
	}
	n := int(binary.BigEndian.Uint32(v[16:]))
	if n > len(v)-20 {
		return PlanState{}, fmt.Errorf("%w: plan of %s: subscription of %d bytes in %d", errCorrupt, c.id, n, len(v))
	}
	return PlanState{
		Version:           int64(binary.BigEndian.Uint64(v[0:])),
		SubscriptionOrder: int64(binary.BigEndian.Uint64(v[8:])),
		Subscription:      string(v[20 : 20+n]),
		Override:          string(v[20+n:]),
	}, nil
}

func (c *boltCustomer) putPlan(ps PlanState) error {
	v := make([]byte, 20, 20+len(ps.Subscription)+len(ps.Override))
	binary.BigEndian.PutUint64(v[0:], uint64(ps.Version))
	binary.BigEndian.PutUint64(v[8:], uint64(ps.SubscriptionOrder))
	binary.BigEndian.PutUint32(v[16:], uint32(len(ps.Subscription)))
	v = append(append(v, ps.Subscription...), ps.Override...)
	return c.b.Put([]byte(kPlan), v)
}

// ReservePlan implements Store.
func (s *BoltStore) ReservePlan(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, planVersion int64) (money.Micros, error) {
	if err := checkPlanVersion(planVersion); err != nil {
		return 0, err
	}
	return s.reserve(ctx, customer, holdID, amount, ttl, true, planVersion)
}

// Plan implements Store.
func (s *BoltStore) Plan(ctx context.Context, customer string) (PlanState, error) {
	if err := checkCustomer(customer); err != nil {
		return PlanState{}, err
	}
	var ps PlanState
	err := s.db.View(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err != nil || c == nil {
			return err
		}
		ps, err = c.plan()
		return err
	})
	if err != nil {
		return PlanState{}, s.fail("plan of "+customer, err)
	}
	return ps, nil
}

// PutSubscription implements Store.
func (s *BoltStore) PutSubscription(ctx context.Context, customer, value string, order int64) (PlanWrite, error) {
	if err := checkPutSubscription(customer, value, order); err != nil {
		return PlanWrite{}, err
	}
	return s.putPlan("put subscription of "+customer, customer, func(ps PlanState) (PlanState, PlanWrite) {
		switch {
		case ps.Subscription != "" && order < ps.SubscriptionOrder:
			return ps, PlanWrite{State: ps, Stale: true}
		case ps.Subscription == value:
			ps.SubscriptionOrder = max(ps.SubscriptionOrder, order)
			return ps, PlanWrite{State: ps}
		}
		ps.Version++
		ps.Subscription, ps.SubscriptionOrder = value, order
		return ps, PlanWrite{State: ps, Changed: true}
	})
}

// PutOverride implements Store.
func (s *BoltStore) PutOverride(ctx context.Context, customer, value string) (PlanWrite, error) {
	if err := checkPutOverride(customer, value); err != nil {
		return PlanWrite{}, err
	}
	return s.putPlan("put override of "+customer, customer, func(ps PlanState) (PlanState, PlanWrite) {
		if ps.Override == value {
			return ps, PlanWrite{State: ps}
		}
		ps.Version++
		ps.Override = value
		return ps, PlanWrite{State: ps, Changed: true}
	})
}

// putPlan applies change to the customer's plan inputs in one
// transaction, writing them when they differ.
func (s *BoltStore) putPlan(op, customer string, change func(PlanState) (PlanState, PlanWrite)) (PlanWrite, error) {
	var out PlanWrite
	nowMs := unixMilli(s.now())
	err := s.update(func(tx *bbolt.Tx) error {
		out = PlanWrite{}
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return err
		}
		var old PlanState
		if c != nil {
			if old, err = c.plan(); err != nil {
				return err
			}
		}
		ps, w := change(old)
		out = w
		if ps == old {
			return nil // nothing to write, nor a bucket to create
		}
		if c == nil {
			if c, err = openCustomer(tx, customer, true); err != nil {
				return err
			}
		}
		if err := c.putPlan(ps); err != nil || !w.Changed {
			return err
		}
		// plan.changed, in the same transaction as the change.
		if c, err = s.withEvents(c, nowMs); err != nil {
			return err
		}
		return c.emit(EventPlanChanged, 0, 0, 0, `{"plan_version":`+strconv.FormatInt(ps.Version, 10)+`}`)
	})
	if err != nil {
		return PlanWrite{}, s.fail(op, err)
	}
	return out, nil
}
