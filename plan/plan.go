// Package plan decides what a customer may use right now: which plan they
// are on, from where (an admin override, their Stripe subscription, or the
// default plan), and what that plan allows (models, routes, an output
// ceiling).
//
// It is pure, like meter: it takes the plans from configuration, a
// customer's stored plan inputs and the time, and answers; no I/O, no
// clock, no logger. stripesync writes the subscription state (Subscription)
// and the admin API the override (Override) through the ledger, which keeps
// them as opaque values beside the customer's money; the proxy reads them
// back and asks Catalog.Effective. Time-based transitions (a past_due
// grace running out, an override's until, the end of a period that was
// cancelled) are computed here from the stored times and now, never stored
// as timers.
package plan

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"
)

// All is the models or routes entry that allows everything.
const All = "*"

// DefaultPastDueGrace is how long a past_due subscription keeps its plan
// (stripe.past_due_grace): three days, the usual first retry schedule of
// Stripe's Smart Retries.
const DefaultPastDueGrace = 72 * time.Hour

// Plan is one entry of plans: what a customer on it may use.
type Plan struct {
	// Name is the plan's key in plans.
	Name string
	// Models are the model names the plan allows; nil or an entry "*"
	// allows every model the routes price; an empty, non-nil list none.
	Models []string
	// Routes are the route paths (as configured) the plan allows; nil or
	// an entry "*" allows every route; an empty, non-nil list none.
	Routes []string
	// MaxOutputTokens lowers the output ceiling of every route that has
	// one (route max_output_tokens); 0 leaves the routes' own.
	MaxOutputTokens int64
}

// AllowsModel reports whether the plan includes model.
func (p *Plan) AllowsModel(model string) bool {
	return p.Models == nil || slices.Contains(p.Models, All) || slices.Contains(p.Models, model)
}

// AllowsRoute reports whether the plan includes the route configured
// with path.
func (p *Plan) AllowsRoute(path string) bool {
	return p.Routes == nil || slices.Contains(p.Routes, All) || slices.Contains(p.Routes, path)
}

// AllModels reports whether the plan allows every model.
func (p *Plan) AllModels() bool { return p.Models == nil || slices.Contains(p.Models, All) }

// OutputCeiling is the output ceiling of a route whose own is
// routeCeiling (0: none) under this plan: the lower of the two, where the
// route has one.
func (p *Plan) OutputCeiling(routeCeiling int64) int64 {
	if p.MaxOutputTokens > 0 && routeCeiling > 0 && p.MaxOutputTokens < routeCeiling {
		return p.MaxOutputTokens
	}
	return routeCeiling
}

// Catalog is the plans of a configuration: plans, default_plan and
// stripe.past_due_grace. A nil *Catalog means no plans are configured:
// everything is allowed, as before plans existed.
type Catalog struct {
	// Plans by name.
	Plans map[string]*Plan
	// Default names the plan of customers without a subscription that
	// gives one (and without an override). It is one of Plans.
	Default string
	// PastDueGrace is how long a past_due subscription keeps its plan,
	// counted from when tollgate first saw it past_due.
	PastDueGrace time.Duration
}

// Check reports what makes c unusable: a default that is not a plan.
// config validates the file with lines; this guards code that builds a
// Catalog itself.
func (c *Catalog) Check() error {
	if c == nil {
		return nil
	}
	if _, ok := c.Plans[c.Default]; !ok {
		return fmt.Errorf("plan: the default plan %q is not one of the plans", c.Default)
	}
	if c.PastDueGrace < 0 {
		return fmt.Errorf("plan: past_due grace %s is negative", c.PastDueGrace)
	}
	return nil
}

// Names returns the plans' names, sorted.
func (c *Catalog) Names() []string {
	names := make([]string, 0, len(c.Plans))
	for n := range c.Plans {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Including returns the names of the plans, sorted, for which ok is true:
// for a refusal's "plans that include it".
func (c *Catalog) Including(ok func(*Plan) bool) []string {
	var out []string
	for _, n := range c.Names() {
		if ok(c.Plans[n]) {
			out = append(out, n)
		}
	}
	return out
}

// Source says where a customer's plan comes from (the access answer's
// plan_source).
type Source string

// The sources, in the order they win.
const (
	SourceOverride     Source = "override"
	SourceSubscription Source = "subscription"
	SourceDefault      Source = "default"
)

// Subscription statuses, as Stripe names them
// (https://docs.stripe.com/api/subscriptions/object#subscription_object-status).
const (
	StatusActive            = "active"
	StatusTrialing          = "trialing"
	StatusPastDue           = "past_due"
	StatusCanceled          = "canceled"
	StatusUnpaid            = "unpaid"
	StatusIncomplete        = "incomplete"
	StatusIncompleteExpired = "incomplete_expired"
	StatusPaused            = "paused"
)

// Subscription is the state of a customer's Stripe subscription as
// stripesync last recorded it: the plan its price puts the customer on
// and what decides how long that lasts.
type Subscription struct {
	// ID is the Stripe subscription id (sub_…).
	ID string `json:"id"`
	// Status is Stripe's status of the subscription.
	Status string `json:"status"`
	// Plan is the plan its price names (stripe.prices.<id>.plan); ""
	// when no item's price names one.
	Plan string `json:"plan,omitempty"`
	// Price is the price id (or lookup key) Plan came from.
	Price string `json:"price,omitempty"`
	// CurrentPeriodEnd is the end of the paid period; zero when unknown.
	CurrentPeriodEnd time.Time `json:"current_period_end,omitzero"`
	// CancelAtPeriodEnd: the subscription ends at CurrentPeriodEnd.
	CancelAtPeriodEnd bool `json:"cancel_at_period_end"`
	// CancelAt is when a scheduled cancellation takes effect; zero for
	// none.
	CancelAt time.Time `json:"cancel_at,omitzero"`
	// PastDueSince is when tollgate first saw the subscription past_due
	// (the event's time); zero unless Status is past_due.
	PastDueSince time.Time `json:"past_due_since,omitzero"`
	// Customer is the Stripe customer (cus_…).
	Customer string `json:"stripe_customer,omitempty"`
}

// Override is an operator's choice of plan for a customer, which wins
// over the subscription until Until (zero: until removed).
type Override struct {
	Plan   string    `json:"plan"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason,omitempty"`
	// SetAt is when it was set.
	SetAt time.Time `json:"set_at"`
}

// State is a customer's plan inputs: what the ledger stores (as JSON)
// and the proxy caches. The zero value is a customer with neither.
type State struct {
	// Version is the ledger's version of these inputs (see
	// ledger.PlanState); it changes whenever they do.
	Version      int64
	Subscription *Subscription
	Override     *Override
}

// Decode builds a State from the ledger's opaque values ("" for none).
// A value that does not decode is an error: the caller fails closed.
func Decode(version int64, subscription, override string) (State, error) {
	st := State{Version: version}
	if subscription != "" {
		st.Subscription = new(Subscription)
		if err := json.Unmarshal([]byte(subscription), st.Subscription); err != nil {
			return State{}, fmt.Errorf("plan: stored subscription state: %w", err)
		}
	}
	if override != "" {
		st.Override = new(Override)
		if err := json.Unmarshal([]byte(override), st.Override); err != nil {
			return State{}, fmt.Errorf("plan: stored override: %w", err)
		}
	}
	return st, nil
}

// Encode returns the JSON the ledger stores for v (a *Subscription or
// *Override), or "" for nil.
func Encode(v any) string {
	switch x := v.(type) {
	case *Subscription:
		if x == nil {
			return ""
		}
	case *Override:
		if x == nil {
			return ""
		}
	}
	b, err := json.Marshal(v)
	if err != nil { // plain structs of strings, times and bools
		panic(err)
	}
	return string(b)
}

// Decision is a customer's plan at one moment.
type Decision struct {
	// Plan is the plan in force.
	Plan *Plan
	// Source says why: an override, the subscription, or the default.
	Source Source
	// Why says in words why the plan is in force, for messages: e.g.
	// "subscription sub_1 is past_due since …".
	Why string
}

// Effective is the plan a customer with st is on at now:
//
//  1. an override whose plan exists and whose Until is zero or after now;
//  2. else the subscription's plan while the subscription gives it:
//     active or trialing (until CurrentPeriodEnd when it is cancelled at
//     period end, until CancelAt when that is set), past_due for
//     PastDueGrace from PastDueSince;
//  3. else the default plan (no subscription; canceled, unpaid,
//     incomplete, incomplete_expired, paused; a grace or period that
//     ran out; a price that names no plan, or a plan no longer
//     configured).
func (c *Catalog) Effective(st State, now time.Time) Decision {
	if o := st.Override; o != nil {
		if p, ok := c.Plans[o.Plan]; ok && (o.Until.IsZero() || now.Before(o.Until)) {
			why := "an admin override"
			if !o.Until.IsZero() {
				why += " until " + o.Until.UTC().Format(time.RFC3339)
			}
			return Decision{Plan: p, Source: SourceOverride, Why: why}
		}
	}
	if s := st.Subscription; s != nil {
		if p, ok := c.Plans[s.Plan]; ok && c.gives(s, now) {
			return Decision{Plan: p, Source: SourceSubscription, Why: "subscription " + s.ID + " (" + s.Status + ")"}
		}
	}
	why := "no subscription"
	if s := st.Subscription; s != nil {
		why = "subscription " + s.ID + " is " + s.Status
		switch {
		case s.Plan == "":
			why += " with a price that names no plan"
		case c.Plans[s.Plan] == nil:
			why += " on plan " + s.Plan + ", which is no longer configured"
		}
	}
	return Decision{Plan: c.Plans[c.Default], Source: SourceDefault, Why: why}
}

// gives reports whether subscription s still gives its plan at now.
func (c *Catalog) gives(s *Subscription, now time.Time) bool {
	if !s.CancelAt.IsZero() && !now.Before(s.CancelAt) {
		return false
	}
	switch s.Status {
	case StatusActive, StatusTrialing:
		if s.CancelAtPeriodEnd && !s.CurrentPeriodEnd.IsZero() && !now.Before(s.CurrentPeriodEnd) {
			return false
		}
		return true
	case StatusPastDue:
		return !s.PastDueSince.IsZero() && now.Before(s.PastDueSince.Add(c.PastDueGrace))
	}
	return false
}
