package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/plan"
)

// Settings are what a Server serves by: its routes, limits and timeouts.
// New starts with them and Reload replaces them whole. cmd/tollgate builds
// them from the configuration file, whose key each field names; the file's
// documentation gives the defaults. Settings handed to New or Reload must
// not be changed afterwards: requests running under them keep reading
// them.
type Settings struct {
	// Routes are the metered endpoints ("routes"). A request that no route
	// matches is refused with 404 route_not_found, never forwarded
	// unmetered. A route's Path appears once.
	Routes []Route
	// CustomerHeader names the request header that carries the customer's
	// id ("customer_header"). It is removed before forwarding. Required.
	CustomerHeader string
	// MaxRequestBytes is the largest request body read, in bytes
	// ("max_request_bytes"); a larger one is refused with 413. Must be > 0.
	MaxRequestBytes int64
	// RequestBodyTimeout is the longest pause between the bytes of a
	// request body ("request_body_timeout"; see body.go). Must be > 0.
	RequestBodyTimeout time.Duration
	// SettleTimeout bounds each attempt to settle or release a hold, and
	// each renewal ("settle_timeout"); a settlement's first attempt starts
	// at the client's last byte, so one that succeeds is committed within
	// it (see settle.go). Must be > 0.
	SettleTimeout time.Duration
	// MaxRequestDuration is the longest a request may stay open
	// ("max_request_duration"; see renew.go). Must be > 0.
	MaxRequestDuration time.Duration
	// HoldTTL is the lifetime of a hold ("store.hold_ttl"), renewed every
	// HoldTTL/3 while its request is open. Must be > 0.
	HoldTTL time.Duration
	// StoreTimeout bounds the reservation and each readiness check of the
	// store ("store.timeout"). Must be > 0.
	StoreTimeout time.Duration
	// AdminToken is the bearer token the admin API's /v1/* requires
	// ("admin.token"). Empty refuses every /v1/* call with 403
	// admin_disabled.
	AdminToken string
	// Plans are what customers may use ("plans", "default_plan",
	// "stripe.past_due_grace"); nil allows everything, with no plan
	// read on the request path. See entitle.go.
	Plans *plan.Catalog
}

// check reports what makes s unusable, every problem joined. It guards
// what the proxy relies on; cmd/tollgate hands over settings that the
// config package validated in full, with file and line.
func (s *Settings) check() error {
	if s == nil {
		return errors.New("no settings")
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if s.CustomerHeader == "" {
		bad("CustomerHeader", "is empty")
	}
	if s.MaxRequestBytes <= 0 {
		bad("MaxRequestBytes", "%d is not positive", s.MaxRequestBytes)
	}
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"RequestBodyTimeout", s.RequestBodyTimeout},
		{"SettleTimeout", s.SettleTimeout},
		{"MaxRequestDuration", s.MaxRequestDuration},
		{"HoldTTL", s.HoldTTL},
		{"StoreTimeout", s.StoreTimeout},
	} {
		if d.d <= 0 {
			bad(d.key, "%s is not positive", d.d)
		}
	}
	if err := s.Plans.Check(); err != nil {
		bad("Plans", "%v", err)
	}
	seen := make(map[string]bool, len(s.Routes))
	for i, r := range s.Routes {
		key := "Routes[" + strconv.Itoa(i) + "]"
		switch {
		case !strings.HasPrefix(r.Path, "/"):
			bad(key+".Path", "%q does not start with /", r.Path)
		case seen[r.Path]:
			bad(key+".Path", "%q is routed twice", r.Path)
		}
		seen[r.Path] = true
		if !r.API.Valid() {
			bad(key+".API", "%q is not an API the meter knows", r.API)
		}
		if u := r.Upstream; u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key+".Upstream", "want an absolute http or https URL")
		}
		if r.MaxOutputTokens < 0 {
			bad(key+".MaxOutputTokens", "%d is negative", r.MaxOutputTokens)
		}
	}
	return errors.Join(errs...)
}
