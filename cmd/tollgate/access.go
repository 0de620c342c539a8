package main

import (
	"context"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// accessAnswer is GET /v1/customers/{id}/access, the fields the CLI
// prints.
type accessAnswer struct {
	Customer     string  `json:"customer"`
	Plan         *string `json:"plan"`
	PlanSource   *string `json:"plan_source"`
	Subscription *struct {
		ID                string     `json:"id"`
		Status            string     `json:"status"`
		CurrentPeriodEnd  *time.Time `json:"current_period_end"`
		CancelAtPeriodEnd bool       `json:"cancel_at_period_end"`
		PastDueSince      *time.Time `json:"past_due_since"`
	} `json:"subscription"`
	Override *struct {
		Plan   string     `json:"plan"`
		Until  *time.Time `json:"until"`
		Reason string     `json:"reason"`
	} `json:"override"`
	Balance    money.Micros   `json:"balance"`
	Reserved   money.Micros   `json:"reserved"`
	Available  money.Micros   `json:"available"`
	Suspended  bool           `json:"suspended"`
	NextExpiry *ledger.Expiry `json:"next_expiry"`
	Models     []string       `json:"models"`
	Routes     []string       `json:"routes"`
	Why        string         `json:"why"`
	// StripeEvents are the customer's newest Stripe events.
	StripeEvents []stripesync.Record `json:"stripe_events"`
}

// runAccess is `tollgate access ID`.
func runAccess(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	_, data, err := getCustomer(ctx, "access", "Show what a customer may use right now: the plan and where it comes from (an admin\noverride, the Stripe subscription, or the default plan), the subscription, the\ncredits, and the models and routes the plan allows.", args, stdout, "access")
	if err != nil || data == nil {
		return err
	}
	var a accessAnswer
	if err := decodeAnswer(data, &a, "an access answer"); err != nil {
		return err
	}
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	t := newTable(stdout)
	t.printf("customer\t%s\n", a.Customer)
	if a.Plan == nil {
		t.printf("plan\t- (no plans configured: every route and priced model)\n")
	} else {
		src := ""
		if a.PlanSource != nil {
			src = *a.PlanSource
		}
		t.printf("plan\t%s (%s: %s)\n", *a.Plan, src, a.Why)
	}
	if s := a.Subscription; s != nil {
		line := s.ID + " " + s.Status
		if s.CurrentPeriodEnd != nil {
			line += ", period ends " + rfc(*s.CurrentPeriodEnd)
		}
		if s.CancelAtPeriodEnd {
			line += ", cancels then"
		}
		if s.PastDueSince != nil {
			line += ", past due since " + rfc(*s.PastDueSince)
		}
		t.printf("subscription\t%s\n", line)
	}
	if o := a.Override; o != nil {
		line := o.Plan
		if o.Until != nil {
			line += " until " + rfc(*o.Until)
		}
		if o.Reason != "" {
			line += ": " + o.Reason
		}
		t.printf("override\t%s\n", line)
	}
	t.printf("balance\t%s\n", a.Balance)
	t.printf("reserved\t%s\n", a.Reserved)
	t.printf("available\t%s\n", a.Available)
	if a.NextExpiry != nil {
		t.printf("next expiry\t%s at %s\n", a.NextExpiry.Amount, rfc(a.NextExpiry.At))
	}
	if a.Suspended {
		t.printf("suspended\tyes: requests are refused until the Stripe dispute is closed\n")
	}
	list := func(xs []string) string {
		if len(xs) == 0 {
			return "none"
		}
		return strings.Join(xs, ", ")
	}
	t.printf("models\t%s\n", list(a.Models))
	t.printf("routes\t%s\n", list(a.Routes))
	for _, e := range a.StripeEvents {
		line := e.Type + " " + string(e.Outcome)
		if !e.ReceivedAt.IsZero() {
			line = rfc(e.ReceivedAt) + " " + line
		}
		if e.Detail != "" {
			line += ": " + oneLine(e.Detail)
		}
		t.printf("stripe event\t%s\n", line)
	}
	return t.done()
}

// printPlans adds the plans to `tollgate check`'s table: one line each,
// the default marked; nothing without plans.
func printPlans(t *table, c *config.Config) {
	if c.Plans == nil {
		return // everything is allowed, as before plans
	}
	label := "plans"
	for _, name := range slices.Sorted(maps.Keys(c.Plans)) {
		p := c.Plans[name]
		what := func(xs []string, all, none string) string {
			switch {
			case xs == nil || slices.Contains(xs, "*"):
				return all
			case len(xs) == 0:
				return none
			}
			return strings.Join(xs, ", ")
		}
		line := name
		if name == c.DefaultPlan {
			line += " (default)"
		}
		line += ": " + what(p.Models, "every model", "no model") + "; " + what(p.Routes, "every route", "no route")
		if p.MaxOutputTokens > 0 {
			line += "; max_output_tokens " + strconv.FormatInt(p.MaxOutputTokens, 10)
		}
		t.printf("%s\t%s\n", label, line)
		label = ""
	}
	t.printf("\tpast_due_grace %s\n", short(c.Stripe.PastDueGrace))
}
