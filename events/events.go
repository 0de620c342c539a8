// Package events delivers tollgate's outbound events to the application:
// it signs each event as Stripe signs webhooks and POSTs it to the
// configured URL, at least once, in order, retrying with exponential
// backoff for up to MaxAge, from one replica at a time.
//
// It does not write events: the store does, atomically with the ledger
// change that causes each one (ledger.Outbox). It only reads the store's
// log, moves Redis outboxes into it, and keeps a cursor of what was
// delivered in the store's meta map, so a restart or another replica
// carries on where the last delivery stopped.
package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries the signature of a delivery.
const SignatureHeader = "Tollgate-Signature"

// Sign returns the Tollgate-Signature value of body sent at t:
// t=UNIX,v1=hex(HMAC-SHA256(secret, "UNIX.body")), the scheme of Stripe's
// Stripe-Signature (https://docs.stripe.com/webhooks#verify-manually), so
// that receivers verify it the way they already verify Stripe's.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// ErrSignature is returned by Verify for a delivery that tollgate did not
// sign with the secret, or signed too long ago.
var ErrSignature = errors.New("events: bad signature")

// Verify checks header (a Tollgate-Signature value) against body and
// secret, and that its time is within tolerance of now (Stripe's libraries
// use 5 minutes): what a receiver written in Go does. Any v1 that matches
// passes.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: want t=UNIX,v1=HEX, got %q", ErrSignature, header)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed at %s, more than %s from now", ErrSignature, time.Unix(sec, 0).UTC().Format(time.RFC3339), tolerance)
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no v1 matches the body", ErrSignature)
}
