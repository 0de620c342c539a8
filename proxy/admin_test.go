package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v79/webhook"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/proxy"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// call sends one admin API request with token (none when empty).
func (h *harness) call(method, path, token, body string) (*http.Response, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, h.admin.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res, data
}

func wantError(t *testing.T, res *http.Response, data []byte, status int, code string) apiError {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, data)
	}
	e := decodeError(t, data)
	if e.Error.Code != code {
		t.Fatalf("code %q, want %q: %s", e.Error.Code, code, data)
	}
	return e
}

func TestAdminAuth(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name   string
		header string
		status int
		code   string
	}{
		{"no token", "", 401, "unauthorized"},
		{"wrong token", "Bearer not-the-token", 401, "unauthorized"},
		{"token as basic auth", "Basic " + adminToken, 401, "unauthorized"},
		{"right token", "Bearer " + adminToken, 200, ""},
		{"lower-case scheme", "bearer " + adminToken, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.admin.URL+"/v1/customers/acme", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if tc.status == 200 {
				if res.StatusCode != 200 {
					t.Fatalf("%d %s", res.StatusCode, data)
				}
				return
			}
			e := wantError(t, res, data, tc.status, tc.code)
			if e.Error.Type != "authentication_error" || res.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("type %q, WWW-Authenticate %q", e.Error.Type, res.Header.Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("probes and metrics need no token", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			if res, data := h.call("GET", p, "", ""); res.StatusCode != 200 {
				t.Errorf("%s: %d %s", p, res.StatusCode, data)
			}
		}
	})
	t.Run("unknown endpoints need the token too", func(t *testing.T) {
		res, data := h.call("GET", "/v1/nothing", "", "")
		wantError(t, res, data, 401, "unauthorized")
		res, data = h.call("GET", "/v1/nothing", adminToken, "")
		wantError(t, res, data, 404, "not_found")
	})
	t.Run("empty admin.token disables the admin API", func(t *testing.T) {
		off := newHarness(t, harnessOptions{yaml: configWith(t, "token: "+adminToken, `token: ""`)})
		for _, tok := range []string{"", "anything"} {
			res, data := off.call("GET", "/v1/customers/acme", tok, "")
			e := wantError(t, res, data, 403, "admin_disabled")
			if !strings.Contains(e.Error.Message, "set admin.token") {
				t.Errorf("message %q does not say to set admin.token", e.Error.Message)
			}
		}
		if res, _ := off.call("GET", "/healthz", "", ""); res.StatusCode != 200 {
			t.Errorf("/healthz %d", res.StatusCode)
		}
	})
}

func TestAdminAccount(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	res, data := h.call("GET", "/v1/customers/never-seen", adminToken, "")
	want := `{"customer":"never-seen","balance":"0.000000","reserved":"0.000000","available":"0.000000","debt":"0.000000","next_expiry":null,"suspended":false}` + "\n"
	if res.StatusCode != 200 || string(data) != want {
		t.Errorf("%d %s, want %s", res.StatusCode, data, want)
	}
	cust := newCustomer()
	h.grant(cust, "12.5")
	h.store.Suspend(context.Background(), cust, "dp_1")
	_, data = h.call("GET", "/v1/customers/"+cust, adminToken, "")
	want = `{"customer":"` + cust + `","balance":"12.500000","reserved":"0.000000","available":"12.500000","debt":"0.000000","next_expiry":null,"suspended":true}` + "\n"
	if string(data) != want {
		t.Errorf("%s, want %s", data, want)
	}
	// A lot that expires shows as next_expiry; a charge beyond every lot
	// as debt.
	_, err := h.store.Credit(context.Background(), ledger.Credit{Customer: cust, Amount: mustMicros(t, "2"), Kind: ledger.KindGrant, Key: "promo",
		ExpiresAt: time.Date(2100, 1, 31, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	_, data = h.call("GET", "/v1/customers/"+cust, adminToken, "")
	want = `{"customer":"` + cust + `","balance":"14.500000","reserved":"0.000000","available":"14.500000","debt":"0.000000","next_expiry":{"amount":"2.000000","at":"2100-01-31T00:00:00Z"},"suspended":true}` + "\n"
	if string(data) != want {
		t.Errorf("%s, want %s", data, want)
	}
	debtor := newCustomer()
	h.store.Credit(context.Background(), ledger.Credit{Customer: debtor, Amount: mustMicros(t, "-3"), Kind: ledger.KindAdjust, Key: "fix"})
	_, data = h.call("GET", "/v1/customers/"+debtor, adminToken, "")
	want = `{"customer":"` + debtor + `","balance":"-3.000000","reserved":"0.000000","available":"-3.000000","debt":"3.000000","next_expiry":null,"suspended":false}` + "\n"
	if string(data) != want {
		t.Errorf("%s, want %s", data, want)
	}
	res, data = h.call("GET", "/v1/customers/a%20b", adminToken, "")
	e := wantError(t, res, data, 400, "invalid_request")
	if want := `invalid customer id: "a b" contains ' ' at byte 1; use printable ASCII without spaces or braces`; e.Error.Message != want {
		t.Errorf("message %q, want %q", e.Error.Message, want)
	}
	res, data = h.call("DELETE", "/v1/customers/acme", adminToken, "")
	wantError(t, res, data, 405, "method_not_allowed")
	if res.Header.Get("Allow") != "GET" {
		t.Errorf("Allow %q", res.Header.Get("Allow"))
	}
}

type creditAnswer struct {
	Applied bool         `json:"applied"`
	Entry   ledger.Entry `json:"entry"`
	Lot     string       `json:"lot"`
}

func TestAdminCredits(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	path := "/v1/customers/" + cust + "/credits"
	post := func(body string) (*http.Response, []byte) { return h.call("POST", path, adminToken, body) }

	res, data := post(`{"amount":"10.5","reason":"welcome","idempotency_key":"grant-1"}`)
	var first creditAnswer
	if res.StatusCode != 200 || json.Unmarshal(data, &first) != nil {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	if !first.Applied || first.Entry.Kind != ledger.KindGrant || first.Entry.Amount != mustMicros(t, "10.5") ||
		first.Entry.BalanceAfter != mustMicros(t, "10.5") || first.Entry.Reason != "welcome" || first.Entry.Reference != "grant-1" {
		t.Errorf("first: %s", data)
	}
	res, data = post(`{"amount":"10.5","reason":"welcome","idempotency_key":"grant-1"}`)
	var replay creditAnswer
	json.Unmarshal(data, &replay)
	if res.StatusCode != 200 || replay.Applied || replay.Entry.ID != first.Entry.ID {
		t.Errorf("replay: %d %s", res.StatusCode, data)
	}
	res, data = post(`{"amount":"-2","reason":"goodwill reversed","idempotency_key":"adjust-1"}`)
	var debit creditAnswer
	json.Unmarshal(data, &debit)
	if res.StatusCode != 200 || !debit.Applied || debit.Entry.Kind != ledger.KindAdjust || debit.Entry.BalanceAfter != mustMicros(t, "8.5") {
		t.Errorf("debit: %d %s", res.StatusCode, data)
	}
	if a := h.account(cust); a.Balance != mustMicros(t, "8.5") {
		t.Errorf("balance %s, want 8.5: each key applies once", a.Balance)
	}

	tests := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"same key, other amount", `{"amount":"11","idempotency_key":"grant-1"}`, 409, "idempotency_conflict"},
		{"no key", `{"amount":"1"}`, 400, "invalid_request"},
		{"no amount", `{"idempotency_key":"k"}`, 400, "invalid_request"},
		{"zero", `{"amount":"0","idempotency_key":"k"}`, 400, "invalid_request"},
		{"not a decimal", `{"amount":"1e3","idempotency_key":"k"}`, 400, "invalid_request"},
		{"misspelt field", `{"amount":"1","idempotency-key":"k"}`, 400, "invalid_request"},
		{"not JSON", `amount=1`, 400, "invalid_request"},
		{"key with a space", `{"amount":"1","idempotency_key":"a b"}`, 400, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, data := post(tc.body)
			wantError(t, res, data, tc.status, tc.code)
		})
	}
	if first.Lot != first.Entry.ID || debit.Lot != "" {
		t.Errorf("lots: credit %q (entry %s), debit %q; want the credit's entry id and none", first.Lot, first.Entry.ID, debit.Lot)
	}
	if a := h.account(cust); a.Balance != mustMicros(t, "8.5") {
		t.Errorf("balance %s after refused credits", a.Balance)
	}
	res, data = h.call("GET", path, adminToken, "")
	wantError(t, res, data, 405, "method_not_allowed")
}

// TestAdminBodyLimit: the admin API's own 64 KiB limit is named as what it
// is, not as the proxy's max_request_bytes, which does not govern it.
func TestAdminBodyLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	big := `{"amount":"1","idempotency_key":"k","reason":"` + strings.Repeat("x", 70000) + `"}`
	tests := []struct {
		path, example string
	}{
		{"/v1/customers/" + cust + "/credits", `{"amount":"10.5","reason":"…","idempotency_key":"…"}`},
		{"/v1/reconcile", `{"since":"72h"}`},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			res, data := h.call("POST", tc.path, adminToken, big)
			e := wantError(t, res, data, 413, "request_too_large")
			want := "the request body is larger than 65536 bytes (64 KiB), the admin API's fixed limit; send a JSON object like " + tc.example
			if e.Error.Message != want {
				t.Errorf("message:\n got %s\nwant %s", e.Error.Message, want)
			}
		})
	}
	if a := h.account(cust); a.Balance != 0 {
		t.Errorf("balance %s after a refused credit", a.Balance)
	}
}

func TestAdminLedger(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	for i := range 5 {
		h.call("POST", "/v1/customers/"+cust+"/credits", adminToken, fmt.Sprintf(`{"amount":"%d","idempotency_key":"k%d"}`, i+1, i))
	}
	type page struct {
		Entries []ledger.Entry `json:"entries"`
		Next    *string        `json:"next"`
	}
	var amounts []string
	cursor := ""
	for pages := 0; ; pages++ {
		q := "?limit=2"
		if cursor != "" {
			q += "&before=" + cursor
		}
		res, data := h.call("GET", "/v1/customers/"+cust+"/ledger"+q, adminToken, "")
		var p page
		if res.StatusCode != 200 || json.Unmarshal(data, &p) != nil {
			t.Fatalf("%d %s", res.StatusCode, data)
		}
		for _, e := range p.Entries {
			amounts = append(amounts, e.Amount.String())
		}
		if p.Next == nil {
			if !strings.Contains(string(data), `"next":null`) {
				t.Errorf("last page without \"next\":null: %s", data)
			}
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
		cursor = *p.Next
	}
	if got := strings.Join(amounts, " "); got != "5.000000 4.000000 3.000000 2.000000 1.000000" {
		t.Errorf("entries newest first: %s", got)
	}
	res, data := h.call("GET", "/v1/customers/never-seen/ledger", adminToken, "")
	if res.StatusCode != 200 || string(data) != `{"entries":[],"next":null}`+"\n" {
		t.Errorf("empty ledger: %s", data)
	}
	for _, q := range []string{"?limit=0", "?limit=abc", "?limit=1001", "?before=garbage"} {
		res, data := h.call("GET", "/v1/customers/"+cust+"/ledger"+q, adminToken, "")
		wantError(t, res, data, 400, "invalid_request")
	}
}

type fakeReconciler struct {
	events, applied int
	err             error
	since           time.Duration
}

func (f *fakeReconciler) Reconcile(_ context.Context, since time.Duration) (int, int, error) {
	f.since = since
	return f.events, f.applied, f.err
}

func TestAdminReconcile(t *testing.T) {
	t.Run("not configured", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		res, data := h.call("POST", "/v1/reconcile", adminToken, `{"since":"72h"}`)
		wantError(t, res, data, 400, "not_configured")
	})
	rec := &fakeReconciler{events: 5, applied: 2}
	h := newHarness(t, harnessOptions{reconciler: rec})
	res, data := h.call("POST", "/v1/reconcile", adminToken, `{"since":"72h"}`)
	if res.StatusCode != 200 || string(data) != `{"applied":2,"events":5}`+"\n" || rec.since != 72*time.Hour {
		t.Errorf("%d %s since %s", res.StatusCode, data, rec.since)
	}
	for _, body := range []string{`{"since":"3 days"}`, `{"since":"-1h"}`, `{}`} {
		res, data := h.call("POST", "/v1/reconcile", adminToken, body)
		wantError(t, res, data, 400, "invalid_request")
	}
	tests := []struct {
		err    error
		status int
		code   string
		msg    string
	}{
		{proxy.Classed(proxy.ErrNotConfigured, stripesync.ErrNoAPIKey), 400, "not_configured", stripesync.ErrNoAPIKey.Error()},
		{proxy.Classed(proxy.ErrInvalidArgument, errors.New("since 800h is more than 720h")), 400, "invalid_request", "since 800h is more than 720h"},
		{proxy.Classed(proxy.ErrStripeAPI, errors.New("stripe API GET /v1/events: HTTP 401")), 502, "stripe_api_error", "stripe API GET /v1/events: HTTP 401"},
		{proxy.Classed(proxy.ErrIncomplete, errors.New("2 events not applied")), 500, "reconcile_incomplete", "2 events not applied"},
		{fmt.Errorf("apply: %w", ledger.ErrStoreUnavailable), 503, "billing_unavailable", ""},
		{fmt.Errorf("something internal at 10.0.0.7"), 500, "internal_error", ""},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			rec.err = tc.err
			res, data := h.call("POST", "/v1/reconcile", adminToken, `{"since":"1h"}`)
			e := wantError(t, res, data, tc.status, tc.code)
			if tc.msg != "" && e.Error.Message != tc.msg {
				t.Errorf("message %q, want %q", e.Error.Message, tc.msg)
			}
			if strings.Contains(e.Error.Message, "10.0.0.7") {
				t.Errorf("an internal detail reached the caller: %q", e.Error.Message)
			}
		})
	}
}

// TestWebhookDispute: a Stripe top-up through the admin listener credits
// the customer, and a dispute on its payment makes the proxy refuse them
// with 403 until it closes.
func TestWebhookDispute(t *testing.T) {
	const secret = "whsec_test_secret"
	st := boltStore(t)
	testMode := false
	syncer, err := stripesync.New(st, stripesync.Options{WebhookSecrets: []string{secret}, Livemode: &testMode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syncer.Flush(context.Background()) }) // the journal, before the store closes
	h := newHarness(t, harnessOptions{store: st, webhook: syncer.WebhookHandler()})
	cust := newCustomer()
	deliver := func(event string) {
		t.Helper()
		signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(event), Secret: secret, Timestamp: time.Now()})
		req, _ := http.NewRequest(http.MethodPost, h.admin.URL+"/webhooks/stripe", strings.NewReader(event))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", signed.Header)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("webhook: %d %s", res.StatusCode, data)
		}
	}
	deliver(`{"id":"evt_1","object":"event","livemode":false,"type":"checkout.session.completed","created":1700000000,"data":{"object":{
		"id":"cs_test_1","object":"checkout.session","mode":"payment","payment_status":"paid","status":"complete",
		"payment_intent":"pi_test_1","customer":"cus_test_1","amount_total":1000,"currency":"usd",
		"metadata":{"tollgate_customer":"` + cust + `","tollgate_credits":"10"}}}}`)
	if a := h.account(cust); a.Balance != mustMicros(t, "10") {
		t.Fatalf("balance %s after the top-up", a.Balance)
	}
	body := chatBody("gpt-4o", "")
	if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	h.settled(cust, 1)

	deliver(`{"id":"evt_2","object":"event","livemode":false,"type":"charge.dispute.created","created":1700000100,"data":{"object":{
		"id":"dp_test_1","object":"dispute","amount":1000,"currency":"usd","status":"needs_response","reason":"fraudulent",
		"charge":"ch_test_1","payment_intent":"pi_test_1"}}}`)
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body})
	wantError(t, res, data, 403, "customer_suspended")

	res, data = h.call("POST", "/webhooks/stripe", "", `{"id":"evt_3"}`)
	if res.StatusCode != 400 {
		t.Errorf("unsigned webhook: %d %s", res.StatusCode, data)
	}
}

// TestReadyzWhileDraining: from BeginDrain on, /readyz answers 503 so that
// load balancers stop sending traffic, while /healthz stays 200 (the
// process is alive and finishing its requests).
func TestReadyzWhileDraining(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if res, data := h.call("GET", "/readyz", "", ""); res.StatusCode != 200 {
		t.Fatalf("/readyz before draining: %d %s", res.StatusCode, data)
	}
	h.srv.BeginDrain()
	res, data := h.call("GET", "/readyz", "", "")
	if e := wantError(t, res, data, 503, "shutting_down"); e.Error.Message != "tollgate is shutting down" {
		t.Errorf("message %q", e.Error.Message)
	}
	if res, data := h.call("GET", "/healthz", "", ""); res.StatusCode != 200 {
		t.Errorf("/healthz while draining: %d %s", res.StatusCode, data)
	}
}

// TestAdminCreditLots grants credits that expire (at a time, or after a
// duration) and burn early or late, lists them with GET .../lots in burn
// order, and refuses lot settings that make no sense with messages that
// name the field.
func TestAdminCreditLots(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := newHarness(t, harnessOptions{store: store, now: clock})
	cust := newCustomer()
	post := func(body string) (*http.Response, []byte) {
		return h.call("POST", "/v1/customers/"+cust+"/credits", adminToken, body)
	}
	for _, body := range []string{
		`{"amount":"10","idempotency_key":"pack"}`,
		`{"amount":"5","idempotency_key":"promo","expires_in":"720h","priority":10}`,
		`{"amount":"3","idempotency_key":"trial","expires_at":"2030-01-15T00:00:00+01:00"}`,
		`{"amount":"1","idempotency_key":"first","priority":0}`,
	} {
		if res, data := post(body); res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", body, res.StatusCode, data)
		}
	}
	// A retry of expires_in computes another time; the first stands.
	now = now.Add(time.Hour)
	res, data := post(`{"amount":"5","idempotency_key":"promo","expires_in":"720h","priority":10}`)
	var replay creditAnswer
	if json.Unmarshal(data, &replay) != nil || res.StatusCode != 200 || replay.Applied || replay.Lot != "2" {
		t.Fatalf("replay: %d %s", res.StatusCode, data)
	}
	res, data = h.call("GET", "/v1/customers/"+cust+"/lots", adminToken, "")
	want := `{"lots":[` +
		`{"id":"4","kind":"grant","amount":"1.000000","remaining":"1.000000","priority":0,"expires_at":null,"reference":"first","created_at":"2030-01-01T12:00:00Z"},` +
		`{"id":"2","kind":"grant","amount":"5.000000","remaining":"5.000000","priority":10,"expires_at":"2030-01-31T12:00:00Z","reference":"promo","created_at":"2030-01-01T12:00:00Z"},` +
		`{"id":"3","kind":"grant","amount":"3.000000","remaining":"3.000000","priority":50,"expires_at":"2030-01-14T23:00:00Z","reference":"trial","created_at":"2030-01-01T12:00:00Z"},` +
		`{"id":"1","kind":"grant","amount":"10.000000","remaining":"10.000000","priority":50,"expires_at":null,"reference":"pack","created_at":"2030-01-01T12:00:00Z"}` +
		`]}` + "\n"
	if res.StatusCode != 200 || string(data) != want {
		t.Fatalf("lots: %d\n got %s\nwant %s", res.StatusCode, data, want)
	}
	if a := h.account(cust); a.NextExpiry == nil || a.NextExpiry.Amount != mustMicros(t, "3") || !a.NextExpiry.At.Equal(time.Date(2030, 1, 14, 23, 0, 0, 0, time.UTC)) {
		t.Errorf("next expiry %+v; want 3 at 2030-01-14T23:00:00Z", a.NextExpiry)
	}
	res, data = h.call("GET", "/v1/customers/"+newCustomer()+"/lots", adminToken, "")
	if res.StatusCode != 200 || string(data) != `{"lots":[]}`+"\n" {
		t.Errorf("lots of a customer never seen: %d %s", res.StatusCode, data)
	}

	tests := []struct {
		name, body, message string
	}{
		{"both expiries", `{"amount":"1","idempotency_key":"k","expires_at":"2031-01-01T00:00:00Z","expires_in":"1h"}`,
			`give "expires_at" or "expires_in", not both`},
		{"expiry not RFC 3339", `{"amount":"1","idempotency_key":"k","expires_at":"2031-01-01"}`,
			`"expires_at" "2031-01-01" is not an RFC 3339 time such as "2030-01-31T00:00:00Z"`},
		{"expiry in the past", `{"amount":"1","idempotency_key":"k","expires_at":"2030-01-01T12:00:00Z"}`,
			`"expires_at" 2030-01-01T12:00:00Z is not in the future: credits that expire before they are granted could never be spent`},
		{"negative duration", `{"amount":"1","idempotency_key":"k","expires_in":"-1h"}`,
			`"expires_in" "-1h": want a positive duration such as "720h" (units h, m, s)`},
		{"days", `{"amount":"1","idempotency_key":"k","expires_in":"30d"}`,
			`"expires_in" "30d": want a positive duration such as "720h" (units h, m, s)`},
		{"priority too high", `{"amount":"1","idempotency_key":"k","priority":101}`,
			`"priority" 101: want 0 (spent first) to 100; without it the lot gets 50`},
		{"expiry on a debit", `{"amount":"-1","idempotency_key":"k","expires_in":"1h"}`,
			`"expires_at", "expires_in" and "priority" apply to credits that add; a negative amount takes from the customer's lots in burn order`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, data := post(tc.body)
			if e := wantError(t, res, data, 400, "invalid_request"); e.Error.Message != tc.message {
				t.Errorf("message:\n got %s\nwant %s", e.Error.Message, tc.message)
			}
		})
	}
	if a := h.account(cust); a.Balance != mustMicros(t, "19") {
		t.Errorf("balance %s after refused credits; want 19", a.Balance)
	}
	res, data = h.call("POST", "/v1/customers/"+cust+"/lots", adminToken, "{}")
	wantError(t, res, data, 405, "method_not_allowed")
}
