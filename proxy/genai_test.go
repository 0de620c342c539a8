package proxy_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"google.golang.org/genai"
)

// TestGenAISDK points Google's official Go SDK, google.golang.org/genai,
// at the proxy as an application would: its base URL and the customer
// header are all that change. JSON and streamed answers are charged
// exactly, and a 402 surfaces as the SDK's APIError with tollgate's
// message and code, not retried.
func TestGenAISDK(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	client := func(t *testing.T, customer string) *genai.Client {
		c, err := genai.NewClient(ctx, &genai.ClientConfig{
			APIKey:  clientKey,
			Backend: genai.BackendGeminiAPI,
			HTTPOptions: genai.HTTPOptions{
				BaseURL: h.proxy.URL + "/",
				Headers: http.Header{"X-Tollgate-Customer": {customer}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	prompt := genai.Text("Why is the sky blue?")

	t.Run("generateContent", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "1")
		res, err := client(t, cust).Models.GenerateContent(ctx, "gemini-2.5-flash", prompt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.UsageMetadata == nil || res.UsageMetadata.ThoughtsTokenCount != 786 || res.Text() == "" {
			t.Errorf("response %+v", res)
		}
		if c := h.settled(cust, 1)[0]; (-c.Amount).String() != "0.002479" || c.OutputTokens != 947 {
			t.Errorf("charge %+v", c)
		}
	})

	t.Run("streamGenerateContent", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "1")
		var text string
		var last *genai.GenerateContentResponse
		for res, err := range client(t, cust).Models.GenerateContentStream(ctx, "gemini-2.5-flash", prompt, nil) {
			if err != nil {
				t.Fatal(err)
			}
			text += res.Text()
			last = res
		}
		if text != "Sunlight is a mix of every colour. Air molecules scatter short wavelengths far more than long ones, so blue light reaches us from all over the sky.\n\n1. Torch through milky water.\n2. Watch the beam redden.\n3. Rotate a polariser." {
			t.Errorf("text %q", text)
		}
		if last == nil || last.UsageMetadata.CandidatesTokenCount != 63 {
			t.Errorf("last chunk %+v", last)
		}
		if c := h.settled(cust, 1)[0]; (-c.Amount).String() != "0.001197" || c.OutputTokens != 475 {
			t.Errorf("charge %+v", c)
		}
	})

	t.Run("402 surfaces as an APIError", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "0.000001")
		n := len(h.up.requests())
		_, err := client(t, cust).Models.GenerateContent(ctx, "gemini-2.5-flash", prompt, nil)
		var apiErr genai.APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("err %T %v, want a genai.APIError", err, err)
		}
		if apiErr.Code != 402 || apiErr.Status != "RESOURCE_EXHAUSTED" || len(apiErr.Details) != 1 || apiErr.Details[0]["reason"] != "insufficient_credits" {
			t.Errorf("APIError %+v", apiErr)
		}
		if apiErr.Message == "" {
			t.Error("no message")
		}
		if len(h.up.requests()) != n {
			t.Error("a request reached the upstream")
		}
		if got := h.metric("tollgate_requests_total", map[string]string{"route": "/v1beta/models/", "status": "402"}); got != 1 {
			t.Errorf("%v requests answered 402, want 1 (the SDK must not retry)", got)
		}
	})
}
