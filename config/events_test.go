package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/money"
)

// TestEvents: the events: section parses thresholds exactly, and every
// mistake is reported with its key and line.
func TestEvents(t *testing.T) {
	c := mustParse(t, minimal+`events:
  url: https://app.example.com/hooks/tollgate
  secret: ${EVENTS_SECRET}
  low_balance: ["10", "0.5", 1]
`, envOf(map[string]string{"EVENTS_SECRET": "s3cret"}))
	want := []money.Micros{10 * money.Credit, money.Credit / 2, money.Credit}
	if e := c.Events; !e.Enabled || e.URL != "https://app.example.com/hooks/tollgate" || e.Secret != "s3cret" || !slices.Equal(e.LowBalance, want) {
		t.Fatalf("events = %+v", e)
	}
	if off := mustParse(t, minimal, noEnv); off.Events.Enabled {
		t.Fatal("events enabled without an events: section")
	}
	if poll := mustParse(t, minimal+"events: {}\n", noEnv); !poll.Events.Enabled || poll.Events.URL != "" {
		t.Fatalf("events: {} = %+v; want on, for polling only", poll.Events)
	}

	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"url without secret", "events:\n  url: https://x.example\n", []string{
			"line 9: events.secret: is empty; deliveries to events.url must be signed: set it to a long random value, e.g. from `openssl rand -hex 32`, and verify Tollgate-Signature with it"}},
		{"bad url", "events:\n  url: ftp://x\n  secret: s\n", []string{
			`line 10: events.url: "ftp://x" is not an http or https URL (want e.g. "https://app.example.com/webhooks/tollgate")`}},
		{"bad thresholds", "events:\n  low_balance: [\"ten\", 1.0000001]\n", []string{
			`line 10: events.low_balance[0]: "ten" is not a decimal (want e.g. "10")`,
			`line 10: events.low_balance[1]: "1.0000001" has more than 6 decimals; amounts are counted in millionths of a credit (want e.g. "10")`}},
		{"zero threshold", "events:\n  low_balance:\n    - \"5\"\n    - \"0\"\n", []string{
			`line 12: events.low_balance[1]: "0.000000" is not positive (want a threshold such as "10")`}},
		{"unknown key", "events:\n  urls: https://x\n", []string{
			`line 10: events.urls: unknown key (did you mean url?); allowed keys: url, secret, low_balance`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse(strings.NewReader(minimal+tc.yaml), noEnv)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("Parse error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
