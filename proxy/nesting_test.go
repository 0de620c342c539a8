package proxy_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestDeepNestingRefused: a body of nested arrays, sent by anyone naming
// any customer (here one without credits), is refused with 400
// invalid_request naming the nesting limit, on a token route and on a
// flat one; nothing reaches the upstream and no hold is left. A 24 MB body
// of "[" used to end the process with a stack overflow.
func TestDeepNestingRefused(t *testing.T) {
	yaml := strings.Replace(testConfig, "max_request_bytes: 65536", "max_request_bytes: 33554432", 1)
	h := newHarness(t, harnessOptions{yaml: yaml})
	const want = "the request body nests JSON arrays and objects more than 256 levels deep, tollgate's limit; send a shallower body"
	huge := strings.Repeat("[", 24<<20)
	valid := `{"model":"gpt-4o","messages":` + strings.Repeat("[", 257) + strings.Repeat("]", 257) + `}`
	tests := []struct {
		name, path, body string
	}{
		{"chat, 24 MB of [", "/v1/chat/completions", huge},
		{"chat, valid JSON 257 deep", "/v1/chat/completions", valid},
		{"anthropic, valid JSON 257 deep", "/v1/messages", valid},
		{"flat, 24 MB of [", "/v1/models", huge},
		{"flat, valid JSON 257 deep", "/v1/models", valid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cust := newCustomer()
			res, data := h.do(request{path: tc.path, customer: cust, body: tc.body})
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d: %.300s", res.StatusCode, data)
			}
			e := decodeErrorAnyDialect(t, data)
			if e.code != "invalid_request" || e.message != want {
				t.Errorf("error %+v, want invalid_request: %s", e, want)
			}
			if a := h.account(cust); a.Reserved != 0 || a.Balance != 0 {
				t.Errorf("account %+v", a)
			}
		})
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}

	// Concurrent deep bodies are refused without taking memory in
	// proportion to their depth (8 × 4 MB once took RSS past 2 GB); the
	// bound itself is measured in meter (TestDeepNestingBoundedStack).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", bytes.NewReader(bytes.Repeat([]byte("["), 4<<20)))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("X-Tollgate-Customer", newCustomer())
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d", res.StatusCode)
			}
		})
	}
	wg.Wait()
	// A flat route still takes any body that is not JSON.
	cust := newCustomer()
	h.grant(cust, "1")
	res, data := h.do(request{path: "/v1/models", customer: cust, body: "not json [" + strings.Repeat("[", 1000)})
	if res.StatusCode != 200 {
		t.Errorf("flat route refused a non-JSON body: %d %s", res.StatusCode, data)
	}
	h.settled(cust, 1)
}

// dialectError is error.code and error.message, which both error
// dialects (OpenAI's and Anthropic's) carry.
type dialectError struct{ code, message string }

func decodeErrorAnyDialect(t *testing.T, body []byte) dialectError {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an error object: %v: %s", err, body)
	}
	return dialectError{e.Error.Code, e.Error.Message}
}
