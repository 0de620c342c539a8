package ledger

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/money"
)

var (
	//go:embed lua/plan_subscription.lua
	planSubscriptionLua string
	//go:embed lua/plan_override.lua
	planOverrideLua string

	planSubscriptionScript = redis.NewScript(libLua + planSubscriptionLua)
	planOverrideScript     = redis.NewScript(libLua + planOverrideLua)
)

// reservePlanChanged is reserve.lua's {4, version, subscription, order,
// override}: ARGV[7] is not the stored plan version; the stored plan
// inputs follow; nothing reserved.
const reservePlanChanged reserveStatus = 4

// planStatus is the status of plan_subscription.lua's and
// plan_override.lua's reply {status, version, subscription, order,
// override}.
type planStatus int64

const (
	// planStored is {0, ...}: stored; the value changed and the version
	// with it.
	planStored planStatus = 0
	// planSame is {1, ...}: the same value is stored already.
	planSame planStatus = 1
	// planStale is {2, ...}: a state with a larger ordering key is
	// stored; nothing changed.
	planStale planStatus = 2
)

// planFields reads the plan state of a script reply from field 1 on.
func planFields(r *reply) PlanState {
	return PlanState{Version: r.int(1), Subscription: r.str(2), SubscriptionOrder: r.int(3), Override: r.str(4)}
}

// planChanged decodes reserve.lua's reservePlanChanged reply.
func planChanged(customer string, r *reply) error {
	st := planFields(r)
	if r.err != nil {
		return fmt.Errorf("reserve for %s: %w", customer, r.err)
	}
	return &PlanChangedError{Customer: customer, State: st}
}

// ReservePlan implements Store.
func (s *RedisStore) ReservePlan(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, planVersion int64) (money.Micros, error) {
	if err := checkPlanVersion(planVersion); err != nil {
		return 0, err
	}
	return s.reserve(ctx, customer, holdID, amount, ttl, true, planVersion)
}

// Plan implements Store. The plan fields are one hash's, read at once.
func (s *RedisStore) Plan(ctx context.Context, customer string) (PlanState, error) {
	if err := checkCustomer(customer); err != nil {
		return PlanState{}, err
	}
	if err := s.guard(); err != nil {
		return PlanState{}, fmt.Errorf("plan of %s: %w", customer, err)
	}
	vals, err := s.client.HMGet(ctx, customerKeys(customer)[keyAccount], "plan_v", "plan_sub", "plan_order", "plan_ovr").Result()
	if err != nil {
		return PlanState{}, s.fail("plan of "+customer, err)
	}
	if len(vals) != 4 {
		return PlanState{}, fmt.Errorf("plan of %s: %w: %d values", customer, errCorrupt, len(vals))
	}
	var st PlanState
	for i, dst := range []*int64{&st.Version, nil, &st.SubscriptionOrder} {
		if dst == nil || vals[i] == nil {
			continue
		}
		v, ok := vals[i].(string)
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			return PlanState{}, fmt.Errorf("plan of %s: %w: field %d is %v", customer, errCorrupt, i, vals[i])
		}
		*dst = n
	}
	st.Subscription, _ = vals[1].(string)
	st.Override, _ = vals[3].(string)
	return st, nil
}

// PutSubscription implements Store.
func (s *RedisStore) PutSubscription(ctx context.Context, customer, value string, order int64) (PlanWrite, error) {
	if err := checkPutSubscription(customer, value, order); err != nil {
		return PlanWrite{}, err
	}
	return s.putPlan(ctx, "put subscription of "+customer, planSubscriptionScript, customer, value, order)
}

// PutOverride implements Store.
func (s *RedisStore) PutOverride(ctx context.Context, customer, value string) (PlanWrite, error) {
	if err := checkPutOverride(customer, value); err != nil {
		return PlanWrite{}, err
	}
	return s.putPlan(ctx, "put override of "+customer, planOverrideScript, customer, value)
}

func (s *RedisStore) putPlan(ctx context.Context, op string, script *redis.Script, customer string, args ...any) (PlanWrite, error) {
	r, err := s.run(ctx, script, customerKeys(customer), args...)
	if err != nil {
		return PlanWrite{}, s.failWrite(op, err)
	}
	status, st := planStatus(r.int(0)), planFields(r)
	if r.err != nil {
		return PlanWrite{}, fmt.Errorf("%s: %w", op, r.err)
	}
	switch status {
	case planStored:
		return PlanWrite{State: st, Changed: true}, nil
	case planSame:
		return PlanWrite{State: st}, nil
	case planStale:
		return PlanWrite{State: st, Stale: true}, nil
	}
	return PlanWrite{}, fmt.Errorf("%s: %w: status %d", op, errCorrupt, status)
}
