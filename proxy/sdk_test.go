package proxy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAISDK points the official Go SDK at the proxy, as an application
// would: its base URL and the customer header are all that change.
func TestOpenAISDK(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	client := func(customer string) openai.Client {
		return openai.NewClient(
			option.WithBaseURL(h.proxy.URL+"/v1/"),
			option.WithAPIKey(clientKey),
			option.WithHeader("X-Tollgate-Customer", customer),
			option.WithMaxRetries(2),
		)
	}
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello!")},
	}

	t.Run("non-streaming", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		c := client(cust)
		comp, err := c.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if got := comp.Choices[0].Message.Content; got != "The image shows a wooden boardwalk extending through a lush green marshland." {
			t.Errorf("content %q", got)
		}
		if comp.Usage.PromptTokens != 1117 {
			t.Errorf("usage %+v", comp.Usage)
		}
		h.settled(cust, 1)
	})

	t.Run("streaming", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		c := client(cust)
		stream := c.Chat.Completions.NewStreaming(ctx, params)
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; got != "Hello! How can I help you today?" {
			t.Errorf("content %q", got)
		}
		if acc.Usage.TotalTokens != 0 {
			t.Errorf("the client saw the usage chunk it did not ask for: %+v", acc.Usage)
		}
		if c := h.settled(cust, 1)[0]; c.OutputTokens != 9 {
			t.Errorf("charge %+v", c)
		}
	})

	t.Run("402 surfaces as an API error and is not retried", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "0.000001")
		before := h.metric("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "402"})
		c := client(cust)
		_, err := c.Chat.Completions.New(ctx, params)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("error %v is not an *openai.Error", err)
		}
		if apiErr.StatusCode != 402 || apiErr.Code != "insufficient_credits" || apiErr.Type != "insufficient_quota" {
			t.Errorf("status %d code %q type %q", apiErr.StatusCode, apiErr.Code, apiErr.Type)
		}
		if got := h.metric("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "402"}); got != before+1 {
			t.Errorf("the SDK sent %v requests; x-should-retry: false should stop its retries", got-before)
		}
	})
}
