package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/plan"
)

// Plans at preflight (DESIGN "Plans"). With plans configured, the proxy
// prices and allows each request by the customer's plan, computed from
// plan inputs it caches per customer, and reserves with
// ledger.Store.ReservePlan, which refuses in the same atomic step when the
// stored inputs have a newer version than the cached ones. The proxy then
// recomputes from the state the refusal carries and tries again. So the
// common request costs no store round trip beyond the reservation, the
// first of a customer in this process one read, and no request is served
// under a plan the customer no longer has once the change that removed it
// (a webhook, an admin override) was answered.

// planCacheSize bounds the customers whose plan inputs a Server keeps. A
// customer dropped from the cache costs one read on its next request.
const planCacheSize = 1 << 16

// planAttempts bounds the reservations one request tries while its
// customer's plan keeps changing underneath: each failed attempt means
// another change was stored meanwhile.
const planAttempts = 4

// planCache is the plan inputs last seen per customer.
type planCache struct {
	mu sync.Mutex
	m  map[string]plan.State
}

func (c *planCache) get(customer string) (plan.State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.m[customer]
	return st, ok
}

// put keeps st unless a newer version of the customer's inputs is cached
// already.
func (c *planCache) put(customer string, st plan.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]plan.State)
	}
	if old, ok := c.m[customer]; ok && old.Version > st.Version {
		return
	}
	if _, ok := c.m[customer]; !ok && len(c.m) >= planCacheSize {
		for k := range c.m { // drop an arbitrary customer
			delete(c.m, k)
			break
		}
	}
	c.m[customer] = st
}

// decodePlan turns the ledger's opaque plan inputs into a plan.State.
func decodePlan(ps ledger.PlanState) (plan.State, error) {
	return plan.Decode(ps.Version, ps.Subscription, ps.Override)
}

// readPlan reads a customer's plan inputs from the store and caches them.
func (s *Server) readPlan(ctx context.Context, customer string) (plan.State, error) {
	ps, err := s.store.Plan(ctx, customer)
	if err != nil {
		return plan.State{}, err
	}
	st, err := decodePlan(ps)
	if err != nil {
		return plan.State{}, err
	}
	s.plans.put(customer, st)
	return st, nil
}

// entitled returns the refusal of a request for model on rt under d, or
// nil when the plan allows it.
func entitled(cat *plan.Catalog, d plan.Decision, rt *route, model string) error {
	p := d.Plan
	if !p.AllowsRoute(rt.path) {
		return refuse(http.StatusForbidden, CodeRouteNotEntitled,
			"the %s plan (from %s) does not include %s; %s",
			p.Name, d.Why, rt.path, wouldAllow(cat, "it", func(q *plan.Plan) bool { return q.AllowsRoute(rt.path) }, plansRoutes(p)))
	}
	if p.AllModels() {
		return nil
	}
	if model == "" {
		if rt.api == meter.Flat {
			return nil // a route without models: the route decides
		}
		return refuse(http.StatusForbidden, CodeModelNotEntitled,
			"this request names no model, and the %s plan (from %s) includes only %s; name one of them",
			p.Name, d.Why, strings.Join(p.Models, ", "))
	}
	if !p.AllowsModel(model) {
		return refuse(http.StatusForbidden, CodeModelNotEntitled,
			"the %s plan (from %s) does not include the model %s; it includes %s. %s",
			p.Name, d.Why, model, strings.Join(p.Models, ", "), wouldAllow(cat, "the model", func(q *plan.Plan) bool { return q.AllowsModel(model) && q.AllowsRoute(rt.path) }, ""))
	}
	return nil
}

// plansRoutes says which routes p includes, for a refusal.
func plansRoutes(p *plan.Plan) string {
	if len(p.Routes) == 0 {
		return "it includes no route. "
	}
	return "it includes " + strings.Join(p.Routes, ", ") + ". "
}

// wouldAllow names the plans that would allow what was refused.
func wouldAllow(cat *plan.Catalog, what string, ok func(*plan.Plan) bool, prefix string) string {
	names := cat.Including(ok)
	if len(names) == 0 {
		return prefix + "No plan includes " + what + "."
	}
	return prefix + "Plans that include " + what + ": " + strings.Join(names, ", ") + "; ask for an upgrade."
}

// errPlanChurn is the refusal of a request whose customer's plan changed
// under every attempt to reserve it.
var errPlanChurn = refuse(http.StatusServiceUnavailable, CodeBillingUnavailable,
	"this customer's plan changed while the request was being reserved, several times over; nothing was forwarded or charged. Retry shortly")

// reservePlanned prices, allows and reserves a request under the
// customer's plan: the loop ReservePlan's refusals drive (see the top of
// this file). Without plans it is one hold at the route's ceiling.
func (s *Server) reservePlanned(r *http.Request, st *state, rt *route, customer string, req meter.Request, body []byte) (*exchange, error) {
	cat := st.set.Plans
	if cat == nil {
		return s.hold(r, st, rt, customer, req, body, rt.maxOutput, false, 0)
	}
	pst, cached := s.plans.get(customer)
	fresh := !cached // read from the store during this request
	if fresh {
		var err error
		if pst, err = s.readPlanBounded(r.Context(), st, customer); err != nil {
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		d := cat.Effective(pst, s.now())
		if err := entitled(cat, d, rt, req.Model); err != nil {
			if fresh {
				return nil, err
			}
			// The cache may predate an upgrade: refuse only by what
			// the store holds now.
			var rerr error
			if pst, rerr = s.readPlanBounded(r.Context(), st, customer); rerr != nil {
				return nil, rerr
			}
			fresh = true
			continue
		}
		ex, err := s.hold(r, st, rt, customer, req, body, d.Plan.OutputCeiling(rt.maxOutput), true, pst.Version)
		var pce *ledger.PlanChangedError
		if !errors.As(err, &pce) {
			return ex, err
		}
		if attempt >= planAttempts {
			return nil, errPlanChurn
		}
		if pst, err = decodePlan(pce.State); err != nil {
			return nil, err
		}
		s.plans.put(customer, pst)
		fresh = true
	}
}

// readPlanBounded is readPlan bounded by store.timeout, like the
// reservation.
func (s *Server) readPlanBounded(ctx context.Context, st *state, customer string) (plan.State, error) {
	ctx, cancel := context.WithTimeout(ctx, st.storeTimeout)
	defer cancel()
	return s.readPlan(ctx, customer)
}
