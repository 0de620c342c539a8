package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/tollgate-dev/tollgate/ledger"
)

// stripeEventPage is the answer of GET /v1/stripe/events: records as the
// journal keeps them (stripesync.Record: id, type, api_version, livemode,
// received_at, source, customer, stripe_customer, outcome, detail,
// ledger_entry), newest first. Next is null on the last page.
type stripeEventPage struct {
	Events []json.RawMessage `json:"events"`
	Next   *string           `json:"next"`
}

// journal is where the Stripe event records are: AdminOptions.Journal,
// else the store's own journal; nil when neither.
func (a *admin) journal() ledger.Journal {
	if a.opts.Journal != nil {
		return a.opts.Journal
	}
	j, _ := a.s.store.(ledger.Journal)
	return j
}

// stripeEvents lists the Stripe events tollgate received, newest first:
// GET /v1/stripe/events?customer=ID&type=T&limit=N&before=CURSOR. customer
// and type filter; limit and before page as on a customer's ledger.
func (a *admin) stripeEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	j := a.journal()
	if j == nil {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeNotConfigured, "this server's store keeps no journal of Stripe events"))
		return
	}
	q := r.URL.Query()
	jq := ledger.JournalQuery{Customer: q.Get("customer"), Type: q.Get("type"), Before: q.Get("before")}
	var err error
	if jq.Limit, err = pageLimit(q); err != nil {
		a.fail(w, r, err)
		return
	}
	if jq.Customer != "" {
		if err := ledger.ValidateCustomer(jq.Customer); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	page, err := j.ReadJournal(r.Context(), jq)
	switch {
	case errors.Is(err, ledger.ErrInvalidCursor):
		a.fail(w, r, refuse(http.StatusBadRequest, CodeInvalidRequest,
			"before %q is not a cursor: pass the \"next\" of the previous page of GET /v1/stripe/events", q.Get("before")))
		return
	case errors.Is(err, ledger.ErrInvalidArgument) && jq.Type != "":
		a.fail(w, r, refuse(http.StatusBadRequest, CodeInvalidRequest,
			"type %q is not a Stripe event type such as checkout.session.completed", jq.Type))
		return
	case err != nil:
		a.fail(w, r, err)
		return
	}
	out := stripeEventPage{Events: rawRecords(page.Records)}
	if page.Next != "" {
		out.Next = &page.Next
	}
	writeJSON(w, http.StatusOK, out)
}

// recentStripeEvents returns the newest records of customer's Stripe
// events, at most n (1 to ledger.MaxPageSize), in the shape GET
// /v1/stripe/events answers them; none when the store keeps no journal.
// For the answer of GET /v1/customers/{id}/access.
func (a *admin) recentStripeEvents(ctx context.Context, customer string, n int) ([]json.RawMessage, error) {
	j := a.journal()
	if j == nil {
		return []json.RawMessage{}, nil
	}
	page, err := j.ReadJournal(ctx, ledger.JournalQuery{Customer: customer, Limit: n})
	if err != nil {
		return nil, err
	}
	return rawRecords(page.Records), nil
}

// rawRecords is the records' data, which is JSON; never nil, so that an
// empty list is [] on the wire.
func rawRecords(recs []ledger.JournalRecord) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(recs))
	for _, rec := range recs {
		if json.Valid(rec.Data) {
			out = append(out, rec.Data)
		}
	}
	return out
}
