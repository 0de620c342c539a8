package plan

import (
	"testing"
	"time"
)

func testCatalog() *Catalog {
	return &Catalog{
		Plans: map[string]*Plan{
			"free": {Name: "free", Models: []string{"gpt-4o-mini"}, Routes: []string{"/v1/chat/completions"}, MaxOutputTokens: 1024},
			"pro":  {Name: "pro", Models: []string{All}},
			"team": {Name: "team"},
		},
		Default:      "free",
		PastDueGrace: DefaultPastDueGrace,
	}
}

func TestEffective(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	sub := func(status string, mod ...func(*Subscription)) *Subscription {
		s := &Subscription{ID: "sub_1", Status: status, Plan: "pro", Price: "price_pro", CurrentPeriodEnd: now.Add(24 * time.Hour)}
		for _, m := range mod {
			m(s)
		}
		return s
	}
	tests := []struct {
		name       string
		st         State
		wantPlan   string
		wantSource Source
	}{
		{"no inputs: default", State{}, "free", SourceDefault},
		{"active", State{Subscription: sub(StatusActive)}, "pro", SourceSubscription},
		{"trialing", State{Subscription: sub(StatusTrialing)}, "pro", SourceSubscription},
		{"incomplete: not paid yet", State{Subscription: sub(StatusIncomplete)}, "free", SourceDefault},
		{"incomplete_expired", State{Subscription: sub(StatusIncompleteExpired)}, "free", SourceDefault},
		{"canceled", State{Subscription: sub(StatusCanceled)}, "free", SourceDefault},
		{"unpaid", State{Subscription: sub(StatusUnpaid)}, "free", SourceDefault},
		{"paused", State{Subscription: sub(StatusPaused)}, "free", SourceDefault},
		{"unknown status", State{Subscription: sub("frozen")}, "free", SourceDefault},
		{"past_due within grace (71h59m)", State{Subscription: sub(StatusPastDue, func(s *Subscription) {
			s.PastDueSince = now.Add(-72*time.Hour + time.Minute)
		})}, "pro", SourceSubscription},
		{"past_due at grace end (72h)", State{Subscription: sub(StatusPastDue, func(s *Subscription) {
			s.PastDueSince = now.Add(-72 * time.Hour)
		})}, "free", SourceDefault},
		{"past_due without a start: no grace", State{Subscription: sub(StatusPastDue)}, "free", SourceDefault},
		{"cancel_at_period_end before the end", State{Subscription: sub(StatusActive, func(s *Subscription) {
			s.CancelAtPeriodEnd = true
		})}, "pro", SourceSubscription},
		{"cancel_at_period_end at the end", State{Subscription: sub(StatusActive, func(s *Subscription) {
			s.CancelAtPeriodEnd, s.CurrentPeriodEnd = true, now
		})}, "free", SourceDefault},
		{"cancel_at passed", State{Subscription: sub(StatusActive, func(s *Subscription) {
			s.CancelAt = now.Add(-time.Second)
		})}, "free", SourceDefault},
		{"cancel_at ahead", State{Subscription: sub(StatusActive, func(s *Subscription) {
			s.CancelAt = now.Add(time.Second)
		})}, "pro", SourceSubscription},
		{"period end passed without cancel: still active (Stripe renews)", State{Subscription: sub(StatusActive, func(s *Subscription) {
			s.CurrentPeriodEnd = now.Add(-time.Hour)
		})}, "pro", SourceSubscription},
		{"price names no plan", State{Subscription: sub(StatusActive, func(s *Subscription) { s.Plan = "" })}, "free", SourceDefault},
		{"plan no longer configured", State{Subscription: sub(StatusActive, func(s *Subscription) { s.Plan = "gold" })}, "free", SourceDefault},
		{"override wins over subscription", State{Subscription: sub(StatusActive), Override: &Override{Plan: "team"}}, "team", SourceOverride},
		{"override before until", State{Override: &Override{Plan: "pro", Until: now.Add(time.Second)}}, "pro", SourceOverride},
		{"override at until: subscription again", State{Subscription: sub(StatusTrialing), Override: &Override{Plan: "team", Until: now}}, "pro", SourceSubscription},
		{"override of a plan no longer configured", State{Override: &Override{Plan: "gold"}}, "free", SourceDefault},
		{"override can lower the plan", State{Subscription: sub(StatusActive), Override: &Override{Plan: "free"}}, "free", SourceOverride},
	}
	c := testCatalog()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := c.Effective(tc.st, now)
			if d.Plan.Name != tc.wantPlan || d.Source != tc.wantSource {
				t.Errorf("Effective = %s from %s (%s), want %s from %s", d.Plan.Name, d.Source, d.Why, tc.wantPlan, tc.wantSource)
			}
		})
	}
}

func TestPlanAllows(t *testing.T) {
	c := testCatalog()
	free, pro, team := c.Plans["free"], c.Plans["pro"], c.Plans["team"]
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"free allows its model", free.AllowsModel("gpt-4o-mini"), true},
		{"free refuses another model", free.AllowsModel("gpt-4o"), false},
		{"free allows its route", free.AllowsRoute("/v1/chat/completions"), true},
		{"free refuses another route", free.AllowsRoute("/v1/responses"), false},
		{"pro's * allows any model", pro.AllowsModel("o3"), true},
		{"nil routes allow every route", pro.AllowsRoute("/v1/embeddings"), true},
		{"nil models allow every model", team.AllowsModel("x"), true},
		{"empty models allow none", (&Plan{Models: []string{}}).AllowsModel("x"), false},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	for _, tc := range []struct {
		p           *Plan
		route, want int64
	}{
		{free, 4096, 1024}, // lowered
		{free, 512, 512},   // the route's is lower
		{free, 0, 0},       // a route without a ceiling (embeddings) gets none
		{pro, 4096, 4096},  // no plan ceiling
	} {
		if got := tc.p.OutputCeiling(tc.route); got != tc.want {
			t.Errorf("%s.OutputCeiling(%d) = %d, want %d", tc.p.Name, tc.route, got, tc.want)
		}
	}
	if got := c.Including(func(p *Plan) bool { return p.AllowsModel("gpt-4o") }); len(got) != 2 || got[0] != "pro" || got[1] != "team" {
		t.Errorf("Including(gpt-4o) = %v, want [pro team]", got)
	}
}

func TestDecodeEncode(t *testing.T) {
	until := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	sub := &Subscription{ID: "sub_1", Status: StatusPastDue, Plan: "pro", PastDueSince: until}
	ovr := &Override{Plan: "team", Until: until, Reason: "support ticket 42", SetAt: until}
	st, err := Decode(7, Encode(sub), Encode(ovr))
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 7 || *st.Subscription != *sub || *st.Override != *ovr {
		t.Errorf("round trip = %+v %+v %+v", st, st.Subscription, st.Override)
	}
	if Encode((*Subscription)(nil)) != "" || Encode((*Override)(nil)) != "" {
		t.Error("Encode(nil) is not empty")
	}
	if _, err := Decode(1, "{", ""); err == nil {
		t.Error("Decode of a broken value succeeded")
	}
	if st, err := Decode(0, "", ""); err != nil || st.Subscription != nil || st.Override != nil {
		t.Errorf("Decode of nothing = %+v, %v", st, err)
	}
}
