package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/proxy"
)

func TestStripeEventsEndpoint(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	j := h.store.(ledger.Journal)
	at := time.Now()
	for i, r := range []struct{ customer, typ string }{
		{"acme", "checkout.session.completed"},
		{"", "customer.created"},
		{"globex", "invoice.paid"},
		{"acme", "charge.refunded"},
		{"acme", "invoice.paid"},
	} {
		data := fmt.Sprintf(`{"id":"evt_%d","type":%q,"outcome":"applied"}`, i+1, r.typ)
		if _, err := j.AppendJournal(context.Background(), ledger.JournalRecord{At: at.Add(time.Duration(i) * time.Millisecond), Customer: r.customer, Type: r.typ, Data: []byte(data)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	type page struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
		Next *string `json:"next"`
	}
	get := func(q url.Values) (page, *http.Response, []byte) {
		t.Helper()
		res, data := h.call(http.MethodGet, "/v1/stripe/events?"+q.Encode(), adminToken, "")
		var p page
		if res.StatusCode == 200 {
			if err := json.Unmarshal(data, &p); err != nil {
				t.Fatalf("%v: %s", err, data)
			}
		}
		return p, res, data
	}
	ids := func(p page) string {
		s := ""
		for _, e := range p.Events {
			s += e.ID + " "
		}
		return s
	}
	for _, tc := range []struct {
		q    url.Values
		want string
	}{
		{url.Values{}, "evt_5 evt_4 evt_3 evt_2 evt_1 "},
		{url.Values{"customer": {"acme"}}, "evt_5 evt_4 evt_1 "},
		{url.Values{"type": {"invoice.paid"}}, "evt_5 evt_3 "},
		{url.Values{"customer": {"acme"}, "type": {"invoice.paid"}}, "evt_5 "},
		{url.Values{"customer": {"nobody"}}, ""},
	} {
		p, res, data := get(tc.q)
		if res.StatusCode != 200 || ids(p) != tc.want || p.Next != nil {
			t.Errorf("%v: %d %s, want %q", tc.q, res.StatusCode, data, tc.want)
		}
	}
	if _, res, data := get(url.Values{"customer": {"nobody"}}); string(data) != "{\"events\":[],\"next\":null}\n" {
		t.Errorf("empty page: %d %s", res.StatusCode, data)
	}

	// Pages of two of acme's three.
	p, _, _ := get(url.Values{"customer": {"acme"}, "limit": {"2"}})
	if ids(p) != "evt_5 evt_4 " || p.Next == nil {
		t.Fatalf("first page: %+v", p)
	}
	p, _, _ = get(url.Values{"customer": {"acme"}, "limit": {"2"}, "before": {*p.Next}})
	if ids(p) != "evt_1 " || p.Next != nil {
		t.Errorf("second page: %+v", p)
	}

	for _, tc := range []struct {
		q    url.Values
		code string
		msg  string
	}{
		{url.Values{"limit": {"0"}}, "invalid_request", `limit "0": want a whole number from 1 to 1000 (default 50)`},
		{url.Values{"limit": {"x"}}, "invalid_request", `limit "x": want a whole number from 1 to 1000 (default 50)`},
		{url.Values{"before": {"evt_1"}}, "invalid_request", `before "evt_1" is not a cursor: pass the "next" of the previous page of GET /v1/stripe/events`},
		{url.Values{"type": {"a b"}}, "invalid_request", `type "a b" is not a Stripe event type such as checkout.session.completed`},
		{url.Values{"customer": {"a{b}"}}, "invalid_request", `invalid customer id: "a{b}" contains '{' at byte 1; use printable ASCII without spaces or braces`},
	} {
		_, res, data := get(tc.q)
		e := wantError(t, res, data, 400, tc.code)
		if tc.msg != "" && e.Error.Message != tc.msg {
			t.Errorf("%v: message %q, want %q", tc.q, e.Error.Message, tc.msg)
		}
	}
	res, data := h.call(http.MethodPost, "/v1/stripe/events", adminToken, "{}")
	wantError(t, res, data, 405, "method_not_allowed")
	res, data = h.call(http.MethodGet, "/v1/stripe/events", "", "")
	wantError(t, res, data, 401, "unauthorized")

	recent, err := proxy.RecentStripeEvents(h.srv, context.Background(), "acme", 2)
	if err != nil || len(recent) != 2 || string(recent[0]) != `{"id":"evt_5","type":"invoice.paid","outcome":"applied"}` {
		t.Errorf("RecentStripeEvents = %s, %v", recent, err)
	}
}
