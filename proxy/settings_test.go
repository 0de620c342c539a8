package proxy_test

import (
	"net/url"
	"testing"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/proxy"
)

// TestSettingsRefused: New refuses settings the proxy cannot work with,
// naming every problem.
func TestSettingsRefused(t *testing.T) {
	valid := func() *proxy.Settings {
		set := parseSettings(t, testConfig, "http://127.0.0.1:1")
		set.Routes = set.Routes[:1]
		return set
	}
	tests := []struct {
		name   string
		change func(*proxy.Settings) *proxy.Settings
		want   string
	}{
		{"nil", func(*proxy.Settings) *proxy.Settings { return nil }, "proxy: invalid settings: no settings"},
		{"limits", func(s *proxy.Settings) *proxy.Settings {
			s.CustomerHeader, s.MaxRequestBytes, s.HoldTTL = "", -1, 0
			return s
		}, "proxy: invalid settings: CustomerHeader: is empty\nMaxRequestBytes: -1 is not positive\nHoldTTL: 0s is not positive"},
		{"routes", func(s *proxy.Settings) *proxy.Settings {
			r := s.Routes[0]
			r.API, r.Upstream, r.MaxOutputTokens = "openai.chatt", &url.URL{Scheme: "ftp", Host: "x"}, -1
			s.Routes = append(s.Routes, r, proxy.Route{Path: "v1", API: meter.Flat})
			return s
		}, `proxy: invalid settings: Routes[1].Path: "/v1/chat/completions" is routed twice` + "\n" +
			`Routes[1].API: "openai.chatt" is not an API the meter knows` + "\n" +
			`Routes[1].Upstream: want an absolute http or https URL` + "\n" +
			`Routes[1].MaxOutputTokens: -1 is negative` + "\n" +
			`Routes[2].Path: "v1" does not start with /` + "\n" +
			`Routes[2].Upstream: want an absolute http or https URL`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := proxy.New(tc.change(valid()), boltStore(t), proxy.Options{})
			if err == nil || err.Error() != tc.want {
				t.Errorf("New = %v\nwant %s", err, tc.want)
			}
		})
	}
	if _, err := proxy.New(valid(), boltStore(t), proxy.Options{}); err != nil {
		t.Errorf("New(valid settings) = %v", err)
	}
}
