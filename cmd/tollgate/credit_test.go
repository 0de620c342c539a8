package main

import (
	"strings"
	"testing"
	"time"
)

func TestCredit(t *testing.T) {
	f, _ := newFakeAdmin(t)
	tests := []struct {
		name     string
		args     []string
		wantOut  string
		wantErr  string
		wantCode int
		wantBody string
	}{
		{
			name:     "flags after the arguments",
			args:     []string{"credit", "cust_1", "10.5", "--key", "k1", "--reason", "welcome"},
			wantOut:  "credited 10.500000 to cust_1; balance after: 10.500000 (entry 1)\n",
			wantBody: `{"amount":"10.500000","idempotency_key":"k1","reason":"welcome"}`,
		},
		{
			name:     "the same key again changes nothing",
			args:     []string{"credit", "--key=k1", "cust_1", "10.5"},
			wantOut:  "nothing changed: key \"k1\" was already applied for cust_1; balance after: 10.500000 (entry 1)\n",
			wantBody: `{"amount":"10.500000","idempotency_key":"k1"}`,
		},
		{
			name:     "a negative amount debits",
			args:     []string{"credit", "cust_1", "-5", "--key", "k2"},
			wantOut:  "debited 5.000000 from cust_1; balance after: 5.500000 (entry 2)\n",
			wantBody: `{"amount":"-5.000000","idempotency_key":"k2"}`,
		},
		{
			name:     "after --",
			args:     []string{"credit", "--key", "k3", "--", "cust_1", "-0.5"},
			wantOut:  "debited 0.500000 from cust_1; balance after: 5.000000 (entry 3)\n",
			wantBody: `{"amount":"-0.500000","idempotency_key":"k3"}`,
		},
		{
			name:     "an API error is its message",
			args:     []string{"credit", "cust_1", "-5000", "--key", "k4"},
			wantErr:  "tollgate: amount exceeds the adjustment limit (HTTP 400, invalid_request)\n",
			wantCode: 1,
			wantBody: `{"amount":"-5000.000000","idempotency_key":"k4"}`,
		},
		{
			name:     "no key",
			args:     []string{"credit", "cust_1", "10"},
			wantErr:  "tollgate: credit needs --key KEY, an idempotency key, so that running it again never credits twice; e.g. --key grant-" + time.Now().UTC().Format("2006-01-02") + "-cust_1\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "not an amount",
			args:     []string{"credit", "cust_1", "1e3", "--key", "k"},
			wantErr:  "tollgate: credit: AMOUNT \"1e3\" uses an exponent; write the amount in full, e.g. \"1000\" for 1e3\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "zero",
			args:     []string{"credit", "cust_1", "0", "--key", "k"},
			wantErr:  "tollgate: credit: AMOUNT is zero; give a positive amount to add credits, or a negative one such as -5 to remove them\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "missing amount",
			args:     []string{"credit", "cust_1", "--key", "k"},
			wantErr:  "tollgate: credit needs AMOUNT: tollgate credit ID AMOUNT --key KEY [--reason TEXT] [--expires-in DURATION | --expires-at TIME] [--priority N]\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "a lot that expires and is spent first",
			args:     []string{"credit", "cust_1", "3", "--key", "k5", "--expires-in", "720h", "--priority", "10"},
			wantOut:  "credited 3.000000 to cust_1; balance after: 8.000000 (entry 4)\n",
			wantBody: `{"amount":"3.000000","expires_in":"720h","idempotency_key":"k5","priority":10}`,
		},
		{
			name:     "an expiry at a time, priority 0",
			args:     []string{"credit", "cust_1", "1", "--key", "k6", "--expires-at", "2030-01-31T00:00:00Z", "--priority", "0"},
			wantOut:  "credited 1.000000 to cust_1; balance after: 9.000000 (entry 5)\n",
			wantBody: `{"amount":"1.000000","expires_at":"2030-01-31T00:00:00Z","idempotency_key":"k6","priority":0}`,
		},
		{
			name:     "both expiries",
			args:     []string{"credit", "cust_1", "1", "--key", "k", "--expires-in", "1h", "--expires-at", "2030-01-31T00:00:00Z"},
			wantErr:  "tollgate: credit: give --expires-in or --expires-at, not both\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "days are not a Go duration",
			args:     []string{"credit", "cust_1", "1", "--key", "k", "--expires-in", "30d"},
			wantErr:  "tollgate: credit: --expires-in \"30d\": want a positive duration such as 720h (units h, m, s)\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "not RFC 3339",
			args:     []string{"credit", "cust_1", "1", "--key", "k", "--expires-at", "2030-01-31"},
			wantErr:  "tollgate: credit: --expires-at \"2030-01-31\" is not an RFC 3339 time such as 2030-01-31T00:00:00Z\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "priority out of range",
			args:     []string{"credit", "cust_1", "1", "--key", "k", "--priority", "101"},
			wantErr:  "tollgate: credit: --priority 101: want 0 (spent first) to 100\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
		{
			name:     "a debit has no lot",
			args:     []string{"credit", "cust_1", "-1", "--key", "k", "--priority", "10"},
			wantErr:  "tollgate: credit: --expires-in, --expires-at and --priority apply to credits that add; a negative AMOUNT takes from the customer's lots in burn order\nRun 'tollgate help' for usage.\n",
			wantCode: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.bodies)
			stdout, stderr, code := runCLI(t, tc.args...)
			if code != tc.wantCode || stdout != tc.wantOut || stderr != tc.wantErr {
				t.Errorf("got stdout %q stderr %q code %d\nwant stdout %q stderr %q code %d", stdout, stderr, code, tc.wantOut, tc.wantErr, tc.wantCode)
			}
			var sent string
			if len(f.bodies) > before {
				sent = strings.TrimSpace(f.bodies[before])
				if got := f.requests[before]; got != "POST /v1/customers/cust_1/credits" {
					t.Errorf("request = %q", got)
				}
			}
			if sent != tc.wantBody {
				t.Errorf("body sent = %q, want %q", sent, tc.wantBody)
			}
		})
	}
}
