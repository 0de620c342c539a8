package proxy

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/apierror"
	"github.com/tollgate-dev/tollgate/meter"
)

// Route is one metered endpoint.
type Route struct {
	// Path is the request path the route serves: exactly, or, when it
	// ends in "/", with every path below it; the longest match wins, as
	// with http.ServeMux's path-only patterns. It starts with "/".
	Path string
	// API is the wire format of the route's requests and responses.
	API meter.API
	// Upstream is the absolute http or https URL requests are forwarded
	// to; the request path is appended to its path.
	Upstream *url.URL
	// Headers are set on every forwarded request, usually the provider's
	// credential. When there are any, the client's own credential headers
	// are dropped first (DESIGN "The proxy").
	Headers http.Header
	// MaxOutputTokens is the output ceiling the preflight reserves for
	// and the proxy enforces upstream (meter.Request.Estimate and
	// Rewrite); 0 means none.
	MaxOutputTokens int64
	// Prices maps model names to prices; "*" prices every model not
	// listed.
	Prices meter.Prices
	// ServerTools are the preflight's allowances for server-side tool
	// calls (meter.Prices.Estimate); nil uses the defaults.
	ServerTools meter.ServerTools
	// LeaveStreamUsage sends openai.chat streams upstream with the
	// client's stream_options instead of forcing include_usage (see
	// meter.Request.LeaveStreamUsage), for OpenAI-compatible upstreams
	// that reject the field.
	LeaveStreamUsage bool
	// ModelFromDeployment prices a request by the Azure OpenAI deployment
	// its path names (meter.AzureDeployment) instead of its body's
	// "model"; a path without one is refused with 400 invalid_request.
	ModelFromDeployment bool
}

// match returns the index of the route serving path: the route whose Path
// equals it, or else the route with the longest Path that ends in "/" and
// prefixes it; -1 when none does.
func (s *Settings) match(path string) int {
	best := -1
	for i := range s.Routes {
		p := s.Routes[i].Path
		if p == path {
			return i
		}
		if strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) && (best < 0 || len(p) > len(s.Routes[best].Path)) {
			best = i
		}
	}
	return best
}

// route is one configured route with everything the request path needs
// resolved in advance: prices, the reverse proxy and its metrics.
type route struct {
	path           string
	api            meter.API
	prices         meter.Prices
	serverTools    meter.ServerTools
	maxOutput      int64
	leaveUsage     bool // Route.LeaveStreamUsage
	deployment     bool // Route.ModelFromDeployment
	upstream       *url.URL
	headers        http.Header // the route's headers; each value slice is clipped, so appends copy
	customerHeader string
	dialect        apierror.Dialect // the error shape of the route's provider
	proxy          *httputil.ReverseProxy
	m              *routeMetrics
}

// credentialHeaders are the client credentials dropped when a route sets
// its own headers (DESIGN "The proxy"): OpenAI's and Azure's, Anthropic's
// and Google's key headers.
var credentialHeaders = [...]string{"Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key"}

// canonicalPath reports whether p (the decoded request path) names one
// resource however the upstream reads it: absolute, with no "." or ".."
// segment, no empty segment but a trailing one, and no backslash. Routes
// match the path as sent, but the providers' front ends normalise it
// before routing (RFC 3986 §5.2.4 dot-segment removal; some also turn
// "\" into "/" and merge "//"), so /v1/files/../chat/completions would
// be priced by a cheap /v1/files/ prefix route and answered by chat
// completions. Percent-encoded forms ("%2e%2e", "%2F", "%5C") are caught
// too, since p is decoded.
func canonicalPath(p string) bool {
	if p == "" || p[0] != '/' || strings.IndexByte(p, '\\') >= 0 {
		return false
	}
	for rest := p[1:]; ; {
		seg, after, more := strings.Cut(rest, "/")
		if seg == "." || seg == ".." || (seg == "" && more) {
			return false
		}
		if !more {
			return true
		}
		rest = after
	}
}

// match returns the route serving path, or nil.
func (st *state) match(path string) *route {
	if i := st.set.match(path); i >= 0 {
		return st.routes[i]
	}
	return nil
}

// slashAlias returns the exact route that p, matched by the prefix route
// rt, names once its trailing slash is dropped, or nil. Upstreams with
// lenient routing (Express's and Fiber's defaults) answer
// /v1/chat/completions/ as /v1/chat/completions, so under a catch-all
// prefix route such a path would be priced by the wrong route.
func slashAlias(st *state, rt *route, p string) *route {
	if len(p) < 2 || p[len(p)-1] != '/' || !strings.HasSuffix(rt.path, "/") {
		return nil
	}
	if exact := st.match(p[:len(p)-1]); exact != nil && exact.path == p[:len(p)-1] {
		return exact
	}
	return nil
}

// rewrite turns the inbound request into the upstream one. ReverseProxy
// has already removed hop-by-hop and X-Forwarded-* headers; tollgate does
// not add X-Forwarded-For, so the provider does not learn the
// application's client addresses.
func (rt *route) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(rt.upstream)
	pr.Out.Host = rt.upstream.Host
	h := pr.Out.Header
	delete(h, rt.customerHeader)
	// Ask for identity bytes: the meter reads usage from the body and
	// cannot read gzip. With no Accept-Encoding of the client's, Go's
	// Transport offers gzip itself and decompresses transparently, so the
	// provider may still compress on the wire while the meter (and the
	// client, on the local hop) sees plain JSON and SSE. A client's own
	// Accept-Encoding would make the Transport hand the compressed bytes
	// through untouched.
	delete(h, "Accept-Encoding")
	// The body is already read; a forwarded Expect: 100-continue would
	// only delay it.
	delete(h, "Expect")
	// ReverseProxy re-adds an inbound protocol upgrade offer after
	// removing hop-by-hop headers; a switched connection could not be
	// metered, so the upstream never sees the offer.
	delete(h, "Upgrade")
	delete(h, "Connection")
	if len(rt.headers) > 0 {
		for _, k := range credentialHeaders {
			delete(h, k)
		}
		for k, v := range rt.headers {
			h[k] = v
		}
	}
	if rt.api == meter.GoogleGemini {
		// Google's API keys also travel as ?key=; a client's never goes
		// upstream, where the route's x-goog-api-key is the credential
		// (and where a key in the URL would end up in logs).
		pr.Out.URL.RawQuery = withoutQueryParam(pr.Out.URL.RawQuery, "key")
	}
}

// withoutQueryParam returns the raw query q without its name parameters,
// however escaped ("%6Bey" is "key" to the upstream too), the others kept
// byte for byte and in order (url.Values.Encode would reorder and
// re-escape them). A parameter whose name does not unescape is kept: the
// upstream cannot read it as name either.
func withoutQueryParam(q, name string) string {
	if q == "" {
		return q
	}
	var b strings.Builder
	for rest := q; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		k, _, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}

// target completes req with what the route reads from the request's path
// and settings: a google.gemini request's model and streaming from its
// path, an Azure deployment as the model, and stream_usage.
func (rt *route) target(r *http.Request, req *meter.Request) error {
	req.LeaveStreamUsage = rt.leaveUsage
	switch {
	case rt.api == meter.GoogleGemini:
		model, stream, ok := meter.GeminiTarget(r.URL.Path)
		if !ok {
			return refuse(http.StatusNotFound, CodeRouteNotFound,
				"no route for %s %s: a google.gemini route meters only .../models/{model}:generateContent and :streamGenerateContent; route other methods (countTokens, embedContent) with api: flat", r.Method, r.URL.Path)
		}
		req.Model, req.Stream = model, stream
	case rt.deployment:
		d, ok := meter.AzureDeployment(r.URL.Path)
		if !ok {
			return refuse(http.StatusBadRequest, CodeInvalidRequest,
				"%s names no deployment: this route prices requests by the Azure OpenAI deployment in the path (/openai/deployments/{deployment}/...)", r.URL.Path)
		}
		req.Model = d
	}
	return nil
}
