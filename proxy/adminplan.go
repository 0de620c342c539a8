package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/plan"
)

// access is the answer of GET /v1/customers/{id}/access (and of PUT and
// DELETE .../plan): everything that decides what the customer may do
// right now, in one read. Plan and PlanSource are null without plans.
type access struct {
	Customer     string              `json:"customer"`
	Plan         *string             `json:"plan"`
	PlanSource   *plan.Source        `json:"plan_source"`
	Subscription *accessSubscription `json:"subscription"`
	Override     *plan.Override      `json:"override"`
	Balance      money.Micros        `json:"balance"`
	Reserved     money.Micros        `json:"reserved"`
	Available    money.Micros        `json:"available"`
	Suspended    bool                `json:"suspended"`
	NextExpiry   *ledger.Expiry      `json:"next_expiry"`
	Models       []string            `json:"models"`
	Routes       []string            `json:"routes"`
	// Why says in words why the plan is in force.
	Why string `json:"why,omitempty"`
	// StripeEvents are the customer's newest Stripe events and what each
	// did (GET /v1/stripe/events), for "I paid but I have no access".
	StripeEvents []json.RawMessage `json:"stripe_events"`
}

// accessStripeEvents is how many of the customer's newest Stripe events
// the access answer links.
const accessStripeEvents = 5

// accessSubscription is the subscription part of the access answer.
type accessSubscription struct {
	ID                string     `json:"id"`
	Status            string     `json:"status"`
	Plan              string     `json:"plan,omitempty"`
	CurrentPeriodEnd  *time.Time `json:"current_period_end"`
	CancelAtPeriodEnd bool       `json:"cancel_at_period_end"`
	PastDueSince      *time.Time `json:"past_due_since,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// accessOf builds the access answer of customer from its account and plan
// inputs under st.
func (s *Server) accessOf(st *state, customer string, acct ledger.Account, pst plan.State) access {
	a := access{
		Customer:   customer,
		Balance:    acct.Balance,
		Reserved:   acct.Reserved,
		Available:  acct.Available,
		Suspended:  acct.Suspended,
		NextExpiry: acct.NextExpiry,
	}
	var p *plan.Plan
	if cat := st.set.Plans; cat != nil {
		d := cat.Effective(pst, s.now())
		p = d.Plan
		a.Plan, a.PlanSource, a.Why = &d.Plan.Name, &d.Source, d.Why
		if sub := pst.Subscription; sub != nil {
			a.Subscription = &accessSubscription{
				ID: sub.ID, Status: sub.Status, Plan: sub.Plan,
				CurrentPeriodEnd: optTime(sub.CurrentPeriodEnd), CancelAtPeriodEnd: sub.CancelAtPeriodEnd,
				PastDueSince: optTime(sub.PastDueSince),
			}
		}
		a.Override = pst.Override
	}
	a.Models, a.Routes = st.entitlements(p)
	return a
}

// entitlements lists the models (priced by name on a route p allows, or
// named by p and priced by a route's "*") and the route paths p allows;
// with p nil, every priced model and every route.
func (st *state) entitlements(p *plan.Plan) (models, routes []string) {
	models, routes = []string{}, []string{}
	for _, rt := range st.routes {
		if p != nil && !p.AllowsRoute(rt.path) {
			continue
		}
		routes = append(routes, rt.path)
		for m := range rt.prices {
			if m != "*" && (p == nil || p.AllowsModel(m)) {
				models = append(models, m)
			}
		}
		if _, any := rt.prices["*"]; any && p != nil && !p.AllModels() {
			models = append(models, p.Models...)
		}
	}
	slices.Sort(models)
	return slices.Compact(models), routes
}

// modelOwner is the owned_by of a model in GET /v1/models: the provider
// of the route that prices it.
func modelOwner(api meter.API) string {
	switch {
	case api == meter.AnthropicMessages:
		return "anthropic"
	case api == meter.GoogleGemini:
		return "google"
	case api == meter.Flat:
		return "tollgate"
	case strings.HasPrefix(string(api), "openai."):
		return "openai"
	}
	return "tollgate"
}

// planState reads customer's plan inputs for the admin API: the zero
// state without plans, so that nothing is read that is not used.
func (s *Server) planState(ctx context.Context, st *state, customer string) (plan.State, error) {
	if st.set.Plans == nil {
		return plan.State{}, nil
	}
	return s.readPlan(ctx, customer)
}

// access answers GET /v1/customers/{id}/access.
func (a *admin) access(w http.ResponseWriter, r *http.Request) {
	id, ok := a.customer(w, r, http.MethodGet)
	if !ok {
		return
	}
	a.answerAccess(w, r, a.s.state.Load(), id)
}

func (a *admin) answerAccess(w http.ResponseWriter, r *http.Request, st *state, id string) {
	pst, err := a.s.planState(r.Context(), st, id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	acct, err := a.s.store.Account(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := a.s.accessOf(st, id, acct, pst)
	if out.StripeEvents, err = a.recentStripeEvents(r.Context(), id, accessStripeEvents); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// planRequest is the body of PUT /v1/customers/{id}/plan.
type planRequest struct {
	Plan   string  `json:"plan"`
	Until  *string `json:"until"`
	Reason string  `json:"reason"`
}

// plan serves PUT (set the override) and DELETE (remove it) on
// /v1/customers/{id}/plan, answering with the access answer after the
// change. Each change is logged with the reason, for the audit trail.
func (a *admin) plan(w http.ResponseWriter, r *http.Request) {
	method := r.Method
	if method != http.MethodPut && method != http.MethodDelete {
		methodNotAllowed(w, r, "PUT, DELETE")
		return
	}
	id, ok := a.customer(w, r, method)
	if !ok {
		return
	}
	st := a.s.state.Load()
	cat := st.set.Plans
	if cat == nil {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeNotConfigured, "no plans are configured on this server; add plans and default_plan to the configuration"))
		return
	}
	value := ""
	var o plan.Override
	if method == http.MethodPut {
		var body planRequest
		if err := decodeBody(w, r, &body, `{"plan":"pro","until":"2030-01-31T00:00:00Z","reason":"…"}`); err != nil {
			a.fail(w, r, err)
			return
		}
		var err error
		if o, err = a.override(cat, body); err != nil {
			a.fail(w, r, err)
			return
		}
		value = plan.Encode(&o)
	}
	res, err := a.s.store.PutOverride(r.Context(), id, value)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	pst, err := decodePlan(res.State)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.s.plans.put(id, pst)
	if method == http.MethodPut {
		a.s.log.Info("plan override set", zap.String("customer", id), zap.String("plan", o.Plan),
			zap.Time("until", o.Until), zap.String("reason", o.Reason), zap.Bool("changed", res.Changed))
	} else {
		a.s.log.Info("plan override removed", zap.String("customer", id), zap.Bool("changed", res.Changed))
	}
	acct, err := a.s.store.Account(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := a.s.accessOf(st, id, acct, pst)
	if out.StripeEvents, err = a.recentStripeEvents(r.Context(), id, accessStripeEvents); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// override checks a PUT body and returns the override it sets.
func (a *admin) override(cat *plan.Catalog, body planRequest) (plan.Override, error) {
	bad := func(format string, args ...any) (plan.Override, error) {
		return plan.Override{}, refuse(http.StatusBadRequest, CodeInvalidRequest, format, args...)
	}
	names := strings.Join(cat.Names(), ", ")
	if body.Plan == "" {
		return bad(`"plan" is required: one of %s`, names)
	}
	if _, ok := cat.Plans[body.Plan]; !ok {
		return bad(`"plan" %q is not a configured plan; want one of %s`, body.Plan, names)
	}
	if len(body.Reason) > maxCreditText {
		return bad(`"reason" is longer than %d bytes`, maxCreditText)
	}
	now := a.s.now()
	o := plan.Override{Plan: body.Plan, Reason: body.Reason, SetAt: now.UTC().Truncate(time.Second)}
	if body.Until != nil {
		until, err := time.Parse(time.RFC3339, *body.Until)
		if err != nil {
			return bad(`"until" %q is not an RFC 3339 time such as "2030-01-31T00:00:00Z"`, *body.Until)
		}
		if !until.After(now) {
			return bad(`"until" %s is not in the future; leave it out for an override until removed`, *body.Until)
		}
		o.Until = until.UTC()
	}
	return o, nil
}
