package stripesync

import "strings"

// apiReads are the Stripe API resources the Syncer reads with its API key,
// as the Stripe Dashboard names them where a restricted key's permissions
// are chosen, each with the path it is read under. Every API call the
// package makes is a GET under one of these paths (permissions_test.go
// checks the code against this list), so a restricted key with Read on
// each, and nothing else, is enough: tollgate never writes to Stripe.
var apiReads = []struct{ resource, path string }{
	{"Checkout Sessions", "/v1/checkout/sessions"}, // line items; the session behind a payment intent
	{"Invoices", "/v1/invoices"},                   // invoice lines an event leaves out
	{"PaymentIntents", "/v1/payment_intents"},      // the purchase behind a dispute
	{"Charges", "/v1/charges"},                     // the purchase behind a dispute without a payment intent
	{"Subscriptions", "/v1/subscriptions"},         // the current state behind a subscription event
	{"Events", "/v1/events"},                       // reconciliation
}

// RestrictedKeyPermissions is what a restricted key (rk_…) needs to serve as
// stripe.api_key, in the Dashboard's words: "Read access to Checkout
// Sessions, Invoices, PaymentIntents, Charges, Subscriptions and Events". The README,
// config.example.yaml and the Kubernetes Secret example say exactly this.
func RestrictedKeyPermissions() string {
	names := make([]string, len(apiReads))
	for i, r := range apiReads {
		names[i] = r.resource
	}
	last := len(names) - 1
	return "Read access to " + strings.Join(names[:last], ", ") + " and " + names[last]
}
