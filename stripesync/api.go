package stripesync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v79"
	"github.com/tidwall/gjson"
)

// The Stripe API client is plain net/http plus gjson rather than
// stripe-go's typed client, for three reasons:
//
//   - Events listed by /v1/events carry their object in the API version the
//     event was created with, not the one the request pins, so they must go
//     through the same tolerant gjson reading as webhook deliveries; typed
//     decoding would have to be undone.
//   - A checkout session looked up by payment intent is applied through the
//     very function that applies a webhook's session, which reads gjson.
//   - stripe-go keeps its configuration in package-level variables
//     (stripe.Key, default backends and logger); a per-instance client keeps
//     two Syncers (or tests against stripe-mock and a fake) independent.
//
// Requests still pin stripe-go's API version so that the objects we fetch
// directly (line items, invoice lines) come in one known shape; the gjson
// readers accept the other shapes anyway.

// maxAPIResponse bounds one Stripe API response we buffer. A list page of
// 100 events with large objects stays well below it.
const maxAPIResponse = 32 << 20

// apiAttempts is how many times a GET is tried when Stripe answers 429 or
// 5xx, or the network fails; GETs are safe to repeat.
const apiAttempts = 3

// APIError is a Stripe API call that failed: a non-2xx answer or a network
// error after retries. Message is Stripe's error.message when it sent one.
type APIError struct {
	Path    string
	Status  int // 0 when no HTTP answer arrived
	Message string
	Err     error // the network error, if any
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("stripe API GET %s: %v", e.Path, e.Err)
	}
	if e.Message != "" {
		return fmt.Sprintf("stripe API GET %s: HTTP %d: %s", e.Path, e.Status, e.Message)
	}
	return fmt.Sprintf("stripe API GET %s: HTTP %d", e.Path, e.Status)
}

func (e *APIError) Unwrap() error { return e.Err }

// get performs one authenticated GET against the Stripe API and returns the
// JSON body. path starts with "/v1/".
func (s *Syncer) get(ctx context.Context, path string, q url.Values) (gjson.Result, error) {
	if s.apiKey == "" {
		return gjson.Result{}, ErrNoAPIKey
	}
	u := s.apiBase + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var last error
	for attempt := 1; ; attempt++ {
		body, retry, err := s.getOnce(ctx, u, path)
		if err == nil {
			return gjson.ParseBytes(body), nil
		}
		last = err
		if !retry || attempt == apiAttempts {
			return gjson.Result{}, last
		}
		// Back off 0.5 s, then 1 s, as Stripe's libraries do for 429 and
		// 5xx (https://docs.stripe.com/rate-limits).
		t := time.NewTimer(time.Duration(attempt) * 500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return gjson.Result{}, errors.Join(last, ctx.Err())
		case <-t.C:
		}
	}
}

func (s *Syncer) getOnce(ctx context.Context, u, path string) (body []byte, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, &APIError{Path: path, Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	req.Header.Set("Stripe-Version", stripe.APIVersion)
	req.Header.Set("User-Agent", "tollgate-stripesync")
	res, err := s.client.Do(req)
	if err != nil {
		return nil, ctx.Err() == nil, &APIError{Path: path, Err: err}
	}
	defer res.Body.Close()
	body, err = io.ReadAll(io.LimitReader(res.Body, maxAPIResponse+1))
	if err != nil {
		return nil, true, &APIError{Path: path, Status: res.StatusCode, Err: err}
	}
	if len(body) > maxAPIResponse {
		return nil, false, &APIError{Path: path, Status: res.StatusCode, Message: "response larger than " + strconv.Itoa(maxAPIResponse) + " bytes"}
	}
	if res.StatusCode/100 != 2 {
		e := &APIError{Path: path, Status: res.StatusCode, Message: gjson.GetBytes(body, "error.message").String()}
		// Stripe may say whether a retry can help; its libraries obey
		// Stripe-Should-Retry over the status (stripe-go PR #928).
		retry := res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500
		if h := res.Header.Get("Stripe-Should-Retry"); h != "" {
			retry = h == "true"
		}
		return nil, retry, e
	}
	if !gjson.ValidBytes(body) {
		return nil, false, &APIError{Path: path, Status: res.StatusCode, Message: "response is not valid JSON"}
	}
	return body, false, nil
}

// list fetches every page of a Stripe list endpoint, calling fn with each
// item, following has_more with starting_after.
func (s *Syncer) list(ctx context.Context, path string, q url.Values, fn func(item gjson.Result) error) error {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	q2.Set("limit", "100")
	for {
		page, err := s.get(ctx, path, q2)
		if err != nil {
			return err
		}
		data := page.Get("data")
		if !data.IsArray() {
			return &APIError{Path: path, Status: http.StatusOK, Message: "list response has no data array"}
		}
		var lastID string
		for _, item := range data.Array() {
			if err := fn(item); err != nil {
				return err
			}
			lastID = item.Get("id").String()
		}
		if !page.Get("has_more").Bool() || lastID == "" {
			return nil
		}
		q2.Set("starting_after", lastID)
	}
}
