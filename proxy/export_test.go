package proxy

import (
	"context"
	"encoding/json"
	"net/http/httputil"
)

// NewBufferPool returns a pool of the copy buffers a Server's reverse
// proxies use, so that BenchmarkProxy can give its bare baseline the same.
func NewBufferPool() httputil.BufferPool { return newBufferPool() }

// MatchPath returns the Path of the route of s that serves path, or ""
// when none does, for TestMatch.
func MatchPath(s *Settings, path string) string {
	if i := s.match(path); i >= 0 {
		return s.Routes[i].Path
	}
	return ""
}

// RecentStripeEvents is what GET /v1/customers/{id}/access links of the
// journal, for TestStripeEventsEndpoint.
func RecentStripeEvents(s *Server, ctx context.Context, customer string, n int) ([]json.RawMessage, error) {
	return (&admin{s: s}).recentStripeEvents(ctx, customer, n)
}
