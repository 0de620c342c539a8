package stripesync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v79/webhook"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/internal/apierror"
)

// WebhookHandler returns the handler for POST /webhooks/stripe. It needs
// no tollgate authentication: the Stripe-Signature header is the
// authentication. It answers
//
//   - 200 once the event's effect is durably stored, or when the event is
//     a duplicate or of a type tollgate ignores;
//   - 400 when the signature is missing, malformed, made with none of
//     Options.WebhookSecrets, or dated further than Options.Tolerance from
//     the clock in either direction (a replay, or this server's clock is
//     wrong), and when the signed body is not JSON;
//   - 405 for any method but POST;
//   - 413 when the body exceeds Options.MaxBodyBytes;
//   - 422 when the event is authentic but its tollgate data is unusable
//     (for example metadata.tollgate_credits is not a decimal);
//   - 502 when a Stripe API call the event needs failed;
//   - 503 when the store is unavailable, or when the event depends on
//     something not known yet (which customer a Stripe customer is, the
//     top-up a refund refers to) or on stripe.api_key;
//   - 500 on any other store failure.
//
// Every non-2xx makes Stripe retry with backoff for up to three days, and
// the JSON error message shows in the Dashboard's delivery log. Errors have
// the shape of every error tollgate writes (package apierror),
// {"error":{"message","type","code"}}, with type server_error from 500 and
// invalid_request_error below.
func (s *Syncer) WebhookHandler() http.Handler {
	return http.HandlerFunc(s.serveWebhook)
}

func (s *Syncer) serveWebhook(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		apierror.Write(w, r, &apierror.Error{Status: http.StatusMethodNotAllowed, Code: codeMethodNotAllowed, Message: "use POST"})
		return
	}
	// Read the raw bytes: the signature covers them exactly, and the cap
	// stops an unauthenticated client from streaming an endless body.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.events.WithLabelValues("unverified", codeRequestTooLarge).Inc()
			s.log.Warn("stripe: webhook body too large", zap.Int64("limit", s.maxBody))
			apierror.Write(w, r, &apierror.Error{Status: http.StatusRequestEntityTooLarge, Code: codeRequestTooLarge, Message: fmt.Sprintf("body exceeds %d bytes", s.maxBody)})
			return
		}
		apierror.Write(w, r, &apierror.Error{Status: http.StatusBadRequest, Code: codeInvalidRequest, Message: "could not read the request body", Err: err})
		return
	}
	if err := s.verify(body, r.Header.Get("Stripe-Signature")); err != nil {
		s.events.WithLabelValues("unverified", codeInvalidSignature).Inc()
		s.log.Warn("stripe: webhook refused", zap.Error(err), zap.String("remote", r.RemoteAddr))
		apierror.Write(w, r, &apierror.Error{Status: http.StatusBadRequest, Code: codeInvalidSignature, Message: err.Error()})
		return
	}
	if !gjson.ValidBytes(body) {
		s.events.WithLabelValues("unverified", codeInvalidRequest).Inc()
		apierror.Write(w, r, &apierror.Error{Status: http.StatusBadRequest, Code: codeInvalidRequest, Message: "the signed body is not valid JSON"})
		return
	}
	out, err := s.apply(r.Context(), gjson.ParseBytes(body), "webhook")
	if err != nil {
		apierror.Write(w, r, answer(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]any{"received": true, "outcome": string(out.Result)})
}

// Signature errors. They say what to check, because the reader is an
// operator looking at failed deliveries in the Stripe Dashboard.
var (
	errNoSecrets    = errors.New("no Stripe webhook secret is configured: set stripe.webhook_secret to the endpoint's signing secret (whsec_…)")
	errNotSigned    = errors.New("missing Stripe-Signature header: this endpoint accepts only events sent by Stripe")
	errBadHeader    = errors.New("malformed Stripe-Signature header")
	errNoSignatures = errors.New("no signature matches a configured webhook secret: set stripe.webhook_secret to this endpoint's signing secret from the Stripe Dashboard (while rolling it, list both in stripe.webhook_secrets)")
)

// verify checks the Stripe-Signature header against every configured
// secret with stripe-go's webhook package, then the timestamp against the
// injected clock, in both directions. stripe-go's own tolerance check reads time.Now and its
// ConstructEvent decodes into the pinned API version's types (refusing other
// versions unless told not to), so only the HMAC comparison is delegated:
// https://docs.stripe.com/webhooks#verify-manually.
func (s *Syncer) verify(body []byte, header string) error {
	if header == "" {
		return errNotSigned
	}
	if len(s.secrets) == 0 {
		return errNoSecrets
	}
	ts, ok := signatureTime(header)
	if !ok {
		return errBadHeader
	}
	matched := false
	for _, secret := range s.secrets {
		err := webhook.ValidatePayloadIgnoringTolerance(body, header, secret)
		if err == nil {
			matched = true
			break
		}
		if errors.Is(err, webhook.ErrInvalidHeader) || errors.Is(err, webhook.ErrNotSigned) {
			return errBadHeader
		}
	}
	if !matched {
		return errNoSignatures
	}
	// The tolerance applies both ways. stripe-go's own check (like
	// Stripe's other libraries) only refuses old timestamps, but a
	// delivery dated ahead of the clock would stay replayable until the
	// clock caught up with it, however far ahead that is.
	switch age := s.now().Sub(ts); {
	case age > s.tolerance:
		return fmt.Errorf("signature timestamp is %s old, beyond the %s tolerance: a replayed request, or this server's clock is wrong", age.Round(time.Second), s.tolerance)
	case -age > s.tolerance:
		return fmt.Errorf("signature timestamp is %s in the future, beyond the %s tolerance: check this server's clock, which is probably behind (sync it with NTP)", (-age).Round(time.Second), s.tolerance)
	}
	return nil
}

// signatureTime reads t= from a header like "t=1492774577,v1=5257a8…,v0=…".
// Stripe sends exactly one t=. A header with several is refused: stripe-go
// computes the HMAC with the last one, so trusting any other for the
// tolerance check would let a captured delivery be replayed forever with a
// fresh t= put in front of its own.
func signatureTime(header string) (time.Time, bool) {
	var (
		ts   time.Time
		seen bool
	)
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k != "t" {
			continue
		}
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil || seen {
			return time.Time{}, false
		}
		ts, seen = time.Unix(sec, 0), true
	}
	return ts, seen
}
