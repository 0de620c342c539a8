package proxy_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// TestAdminEvents: GET /v1/events lists the events of credits made
// through the admin API, oldest first, in pages that follow after=, with
// precise 400s for a bad cursor or limit, and not_configured with events
// off.
func TestAdminEvents(t *testing.T) {
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{
		Events: &ledger.EventOptions{LowBalance: []money.Micros{money.MustParse("10")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h := newHarness(t, harnessOptions{store: s, events: s})
	for i, amount := range []string{"20", "-15", "3"} {
		res, data := h.call("POST", "/v1/customers/acme/credits", adminToken,
			fmt.Sprintf(`{"amount":%q,"idempotency_key":"k%d"}`, amount, i))
		if res.StatusCode != 200 {
			t.Fatalf("credit %s: %d %s", amount, res.StatusCode, data)
		}
	}
	type page struct {
		Events []struct {
			ID       string          `json:"id"`
			Type     string          `json:"type"`
			Customer string          `json:"customer"`
			Data     json.RawMessage `json:"data"`
		} `json:"events"`
		HasMore bool `json:"has_more"`
	}
	get := func(query string) page {
		t.Helper()
		res, data := h.call("GET", "/v1/events"+query, adminToken, "")
		if res.StatusCode != 200 {
			t.Fatalf("GET /v1/events%s: %d %s", query, res.StatusCode, data)
		}
		var p page
		if err := json.Unmarshal(data, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var got []string
	for after := ""; ; {
		p := get("?limit=2&after=" + after)
		for _, e := range p.Events {
			got = append(got, e.ID+" "+e.Type+" "+string(e.Data))
			after = e.ID
		}
		if !p.HasMore {
			break
		}
	}
	want := []string{
		`evt_1 credits.granted {"balance":"20.000000","available":"20.000000","entry_id":"1","amount":"20.000000","lot":"1","kind":"grant"}`,
		`evt_2 balance.low {"balance":"5.000000","available":"5.000000","entry_id":"2","threshold":"10.000000"}`,
		`evt_3 credits.granted {"balance":"8.000000","available":"8.000000","entry_id":"3","amount":"3.000000","lot":"3","kind":"grant"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p := get("?after=evt_3"); len(p.Events) != 0 || p.HasMore {
		t.Fatalf("after the last: %+v", p)
	}

	res, data := h.call("GET", "/v1/events?after=42x", adminToken, "")
	if e := wantError(t, res, data, 400, "invalid_request"); e.Error.Message != `after "42x": want the id of an event, such as evt_42, or nothing to start at the oldest` {
		t.Fatalf("message %q", e.Error.Message)
	}
	res, data = h.call("GET", "/v1/events?limit=0", adminToken, "")
	wantError(t, res, data, 400, "invalid_request")
	res, data = h.call("GET", "/v1/events", "", "")
	wantError(t, res, data, 401, "unauthorized")

	off := newHarness(t, harnessOptions{})
	res, data = off.call("GET", "/v1/events", adminToken, "")
	wantError(t, res, data, 400, "not_configured")
}
