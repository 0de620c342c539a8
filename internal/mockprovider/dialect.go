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
	google
)

func dialectOf(api meter.API) dialect {
	switch api {
	case meter.AnthropicMessages:
		return anthropic
	case meter.GoogleGemini:
		return google
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
// {"error":{"message","type","param","code"}}, Anthropic's
// {"type":"error","error":{"type","message"}} or Google's
// {"error":{"code","message","status"}} (API references, "Errors").
func (d dialect) fail(w http.ResponseWriter, status int, msg string) {
	var b []byte
	switch d {
	case google:
		b = marshal(googleError{Error: googleErrorBody{Code: status, Message: msg, Status: googleStatus(status)}})
	case anthropic:
		b = marshal(anthropicError{Type: "error", Error: anthropicErrorBody{Type: errorType(status, d), Message: msg}})
	default:
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

type googleError struct {
	Error googleErrorBody `json:"error"`
}

type googleErrorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
}

// googleStatus names status as Google's APIs do in error.status (the
// google.rpc.Code of that HTTP status).
func googleStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	}
	if status >= 500 {
		return "INTERNAL"
	}
	return "FAILED_PRECONDITION"
}
