package proxy

import (
	"net/http"

	"github.com/tollgate-dev/tollgate/ledger"
)

// eventList is the answer of GET /v1/events: the events after the one
// asked for, oldest first, and whether more follow (ask again with
// after= the last id).
type eventList struct {
	Events  []ledger.Event `json:"events"`
	HasMore bool           `json:"has_more"`
}

// events lists outbound events, oldest first: GET /v1/events?after=ID&limit=N
// (after: an event id such as evt_42, or empty for the oldest kept;
// limit 1 to ledger.MaxPageSize, default ledger.DefaultPageSize). It is
// how an application polls instead of receiving webhooks, and replays
// what it missed during an outage: the log keeps ledger.EventRetention.
func (a *admin) events(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if a.opts.Events == nil {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeNotConfigured,
			"outbound events are off on this server; add an events: section to the config and restart"))
		return
	}
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	after, err := ledger.ParseEventID(q.Get("after"))
	if err != nil {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeInvalidRequest,
			"after %q: want the id of an event, such as evt_42, or nothing to start at the oldest", q.Get("after")))
		return
	}
	page, err := a.opts.Events.Events(r.Context(), after, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := eventList{Events: page.Events}
	if out.Events == nil {
		out.Events = []ledger.Event{}
	}
	if n := len(page.Events); n > 0 {
		out.HasMore = page.Events[n-1].Seq < page.Last
	} else {
		out.HasMore = max(after, page.First-1) < page.Last
	}
	writeJSON(w, http.StatusOK, out)
}
