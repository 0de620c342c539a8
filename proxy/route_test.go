package proxy_test

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-dev/tollgate/proxy"
)

// TestNonCanonicalPaths: a path with dot segments, empty segments or
// backslashes, literal or percent-encoded, is refused before anything is
// reserved or forwarded. Providers' front ends normalise such paths
// (RFC 3986 §5.2.4), so /v1/files/../chat/completions would select the
// cheap prefix route here and still reach chat completions upstream.
func TestNonCanonicalPaths(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: testConfig + `
  - path: /v1/files/
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.000001"}
`})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"file"}`)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	body := chatBody("gpt-4o", "")
	for _, path := range []string{
		"/v1/files/../chat/completions",
		"/v1/files/%2e%2e/chat/completions",
		"/v1/files/.%2E/chat/completions",
		"/v1/files/..%2Fchat%2Fcompletions",
		"/v1/files/x%2F..%2F..%2Fchat%2Fcompletions",
		"/v1/files/..%5Cchat%5Ccompletions",
		"/v1/files/./file-abc",
		"/v1/files//file-abc",
		"/v1/files/file-abc/.",
	} {
		t.Run(path, func(t *testing.T) {
			res, data := h.do(request{path: path, customer: cust, body: body})
			if res.StatusCode != 404 {
				t.Fatalf("%d %s", res.StatusCode, data)
			}
			decoded, _ := url.PathUnescape(path)
			want := "no route for POST " + decoded + `: tollgate forwards only paths without "." or ".." segments, empty segments or backslashes`
			if e := decodeError(t, data); e.Error.Code != "route_not_found" || e.Error.Message != want {
				t.Errorf("got %+v, want route_not_found: %s", e.Error, want)
			}
		})
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests for non-canonical paths", n)
	}
	h.settled(cust, 0)

	res, data := h.do(request{path: "/v1/files/file-abc/content", customer: cust, body: body})
	if res.StatusCode != 200 {
		t.Fatalf("a canonical path under a prefix route: %d %s", res.StatusCode, data)
	}
	if got := h.up.last(t).Path; got != "/v1/files/file-abc/content" {
		t.Errorf("upstream path %q", got)
	}
	h.settled(cust, 1)
}

// TestTrailingSlashAlias: with a catch-all prefix route, a metered exact
// path written with a trailing slash would be priced by the catch-all,
// while upstreams with lenient routing (Express, Fiber) answer it as the
// exact path. It is refused; other paths under the prefix are not.
func TestTrailingSlashAlias(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: testConfig + `
  - path: /v1/
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.000001"}
`})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[]}`)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	res, data := h.do(request{path: "/v1/chat/completions/", customer: cust, body: chatBody("gpt-4o", "")})
	if res.StatusCode != 404 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	want := "no route for POST /v1/chat/completions/: it would be priced by the route /v1/ while it names the route /v1/chat/completions; send it without the trailing slash"
	if e := decodeError(t, data); e.Error.Code != "route_not_found" || e.Error.Message != want {
		t.Errorf("got %+v, want route_not_found: %s", e.Error, want)
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
	for _, path := range []string{"/v1/batches/", "/v1/files/file-abc/content"} {
		if res, data := h.do(request{path: path, customer: cust, body: "{}"}); res.StatusCode != 200 {
			t.Errorf("%s under the catch-all: %d %s", path, res.StatusCode, data)
		}
	}
	h.settled(cust, 2)
}

// TestMatch: a route serves its Path exactly or, when the Path ends in
// "/", every path below it; the longest such prefix wins.
func TestMatch(t *testing.T) {
	set := &proxy.Settings{Routes: []proxy.Route{{Path: "/v1/"}, {Path: "/v1/chat/completions"}, {Path: "/v1/images/"}}}
	tests := []struct{ path, want string }{
		{"/v1/chat/completions", "/v1/chat/completions"},
		{"/v1/chat/completions/x", "/v1/"},
		{"/v1/images/generations", "/v1/images/"},
		{"/v1/images/", "/v1/images/"},
		{"/v1/images", "/v1/"},
		{"/v1/", "/v1/"},
		{"/v1", ""},
		{"/v2/chat/completions", ""},
	}
	for _, tc := range tests {
		if got := proxy.MatchPath(set, tc.path); got != tc.want {
			t.Errorf("Match(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
