package mockprovider

import (
	"net/http"
	"strconv"

	"github.com/tollgate-dev/tollgate/meter"
)

// dialect is a provider's way of answering errors and naming requests.
type dialect uint8

const (
	openAI dialect = iota
	anthropic
)

func dialectOf(api meter.API) dialect {
	if api == meter.AnthropicMessages {
		return anthropic
	}
	return openAI
}

// setRequestID sets the header the provider's SDKs read a request id
// from: OpenAI's x-request-id, Anthropic's request-id.
func (d dialect) setRequestID(w http.ResponseWriter) {
	if d == anthropic {
		w.Header().Set("Request-Id", newID("req_mock_"))
		return
	}
	w.Header().Set("X-Request-Id", newID("req_mock_"))
}

// fail answers status with the provider's error shape: OpenAI's
// {"error":{"message","type","param","code"}} or Anthropic's
// {"type":"error","error":{"type","message"}} (API references, "Errors").
func (d dialect) fail(w http.ResponseWriter, status int, msg string) {
	var b []byte
	if d == anthropic {
		b = marshal(anthropicError{Type: "error", Error: anthropicErrorBody{Type: errorType(status, d), Message: msg}})
	} else {
		b = marshal(openAIError{Error: openAIErrorBody{Message: msg, Type: errorType(status, d)}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client went away; nothing to do
}

// errorType names status the way each provider does in error.type.
func errorType(status int, d dialect) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == 529 && d == anthropic:
		return "overloaded_error"
	case status >= 500:
		return "api_error"
	}
	return "invalid_request_error"
}

type openAIError struct {
	Error openAIErrorBody `json:"error"`
}

type openAIErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type anthropicError struct {
	Type  string             `json:"type"`
	Error anthropicErrorBody `json:"error"`
}

type anthropicErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}
