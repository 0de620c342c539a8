package mockprovider

import (
	"net/http"
	"strings"
)

// Endpoints of flat routes, which tollgate charges per request: the mock
// answers OpenAI's moderations and model list in their shapes, and any
// other path with a small JSON document that names it.

type moderation struct {
	ID      string             `json:"id"`
	Model   string             `json:"model"`
	Results []moderationResult `json:"results"`
}

type moderationResult struct {
	Flagged        bool               `json:"flagged"`
	Categories     map[string]bool    `json:"categories"`
	CategoryScores map[string]float64 `json:"category_scores"`
}

type modelList struct {
	Object string  `json:"object"`
	Data   []model `json:"data"`
}

type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type echo struct {
	Object string `json:"object"`
	Method string `json:"method"`
	Path   string `json:"path"`
}

// moderationCategories are OpenAI's moderation categories; the mock flags
// nothing.
var moderationCategories = []string{"harassment", "harassment/threatening", "hate", "hate/threatening",
	"illicit", "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent",
	"sexual", "sexual/minors", "violence", "violence/graphic"}

func (x *exchange) flat() {
	switch {
	case strings.HasSuffix(x.path, "/moderations") && x.r.Method == http.MethodPost:
		res := moderationResult{Categories: map[string]bool{}, CategoryScores: map[string]float64{}}
		for _, c := range moderationCategories {
			res.Categories[c] = false
			res.CategoryScores[c] = 0
		}
		x.writeJSON(moderation{ID: newID("modr-mock"), Model: x.model("omni-moderation-latest"), Results: []moderationResult{res}})
	case strings.HasSuffix(x.path, "/models") && x.r.Method == http.MethodGet:
		x.writeJSON(modelList{Object: "list", Data: []model{{ID: "mock", Object: "model", Created: x.p.now().Unix(), OwnedBy: "tollgate-mock"}}})
	default:
		x.writeJSON(echo{Object: "mock.response", Method: x.r.Method, Path: x.path})
	}
}
