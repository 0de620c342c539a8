package proxy

import (
	"errors"
	"net/http"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/plan"
)

// modelsPath is the path of OpenAI's model list
// (https://platform.openai.com/docs/api-reference/models/list), which
// tollgate answers itself on the proxy listener unless a route is
// configured for exactly this path: SDK model pickers then offer what the
// customer may use.
const modelsPath = "/v1/models"

// modelList is OpenAI's list shape.
type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// servesModels reports whether tollgate answers r as the model list: a
// GET of /v1/models that no route is configured for exactly. Without
// plans, a prefix route that matches it keeps forwarding it, as before
// plans existed; with plans the list must be the customer's, so tollgate
// answers it.
func servesModels(st *state, r *http.Request) bool {
	if r.URL.Path != modelsPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	rt := st.match(modelsPath)
	if rt == nil {
		return true
	}
	return rt.path != modelsPath && st.set.Plans != nil
}

// models answers GET /v1/models: the models the customer may use, from
// its plan and the routes' prices (every priced model without plans).
// With plans the customer header is required, and the plan is read from
// the store, not the cache: a listing is rare and should be current.
func (s *Server) models(w http.ResponseWriter, r *http.Request, st *state) {
	var p *plan.Plan
	if cat := st.set.Plans; cat != nil {
		vals := r.Header[st.customerHeader]
		if len(vals) != 1 || vals[0] == "" {
			s.reject(w, r, nil, refuse(http.StatusUnauthorized, CodeMissingCustomer,
				"missing %s header: name the customer whose models to list", st.customerHeader))
			return
		}
		var bad *ledger.InvalidCustomerError
		if err := ledger.ValidateCustomer(vals[0]); errors.As(err, &bad) {
			s.reject(w, r, nil, refuse(http.StatusBadRequest, CodeInvalidRequest, "invalid %s header: %s", st.customerHeader, bad.Detail()))
			return
		}
		pst, err := s.readPlanBounded(r.Context(), st, vals[0])
		if err != nil {
			s.reject(w, r, nil, err)
			return
		}
		p = cat.Effective(pst, s.now()).Plan
	}
	names, _ := st.entitlements(p)
	owner := make(map[string]string, len(names))
	for _, rt := range st.routes {
		if p != nil && !p.AllowsRoute(rt.path) {
			continue
		}
		for _, m := range names {
			if _, ok := owner[m]; ok {
				continue
			}
			if _, named := rt.prices[m]; named {
				owner[m] = modelOwner(rt.api)
			} else if _, any := rt.prices["*"]; any {
				owner[m] = modelOwner(rt.api)
			}
		}
	}
	list := modelList{Object: "list", Data: make([]modelInfo, len(names))}
	for i, m := range names {
		list.Data[i] = modelInfo{ID: m, Object: "model", OwnedBy: owner[m]}
	}
	writeJSON(w, http.StatusOK, list)
}
