package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tollgate-dev/tollgate/proxy"
)

// drainOnClose is an openai-go middleware whose response body, when
// closed, first reads on to its end: http.Response.Trailer is filled only
// at EOF, and the SDK may close a stream at [DONE], before it.
func drainOnClose(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	res, err := next(req)
	if err == nil {
		res.Body = drainingBody{res.Body}
	}
	return res, err
}

type drainingBody struct{ io.ReadCloser }

func (b drainingBody) Close() error {
	_, _ = io.Copy(io.Discard, b.ReadCloser)
	return b.ReadCloser.Close()
}

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
		var raw *http.Response
		comp, err := c.Chat.Completions.New(ctx, params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if got := comp.Choices[0].Message.Content; got != "The image shows a wooden boardwalk extending through a lush green marshland." {
			t.Errorf("content %q", got)
		}
		if comp.Usage.PromptTokens != 1117 {
			t.Errorf("usage %+v", comp.Usage)
		}
		charge := h.settled(cust, 1)[0]
		if got, want := raw.Header.Get(proxy.HeaderCost), (-charge.Amount).String(); got != want {
			t.Errorf("%s %q, want the ledger's charge %s", proxy.HeaderCost, got, want)
		}
		if got, want := raw.Header.Get(proxy.HeaderAvailable), charge.BalanceAfter.String(); got != want {
			t.Errorf("%s %q, want %s", proxy.HeaderAvailable, got, want)
		}
	})

	t.Run("streaming", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		c := client(cust)
		var raw *http.Response
		// The SDK may close the body as soon as it has [DONE], before
		// the end that carries the trailer: a middleware that reads the
		// body to its end on Close is how an application gets the cost.
		stream := c.Chat.Completions.NewStreaming(ctx, params, option.WithResponseInto(&raw), option.WithMiddleware(drainOnClose))
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := raw.Header.Get(proxy.HeaderAvailable); got != "10.000000" {
			t.Errorf("%s %q, want 10.000000 before the request", proxy.HeaderAvailable, got)
		}
		if err := stream.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := raw.Trailer.Get(proxy.HeaderCost), (-h.settled(cust, 1)[0].Amount).String(); got != want {
			t.Errorf("trailer %s %q, want the ledger's charge %s", proxy.HeaderCost, got, want)
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

// TestAnthropicSDK points Anthropic's official Go SDK at the proxy, as an
// application would (base URL and customer header), and checks that the
// SDK surfaces tollgate's refusals as its own typed errors: the status,
// Anthropic's error.type for it, and tollgate's message, which
// @anthropic-ai/sdk and @ai-sdk/anthropic read from the same fields.
func TestAnthropicSDK(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	client := func(opts ...anthropicoption.RequestOption) anthropic.Client {
		return anthropic.NewClient(append([]anthropicoption.RequestOption{
			anthropicoption.WithBaseURL(h.proxy.URL),
			anthropicoption.WithAPIKey("sk-ant-client-key"),
			anthropicoption.WithMaxRetries(2),
		}, opts...)...)
	}
	customer := func(id string) anthropicoption.RequestOption {
		return anthropicoption.WithHeader("X-Tollgate-Customer", id)
	}
	params := func(model string) anthropic.MessageNewParams {
		return anthropic.MessageNewParams{
			Model:     anthropic.Model(model),
			MaxTokens: 1024,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello, Claude"))},
		}
	}
	// requests counts what reached the proxy's Anthropic route with status.
	requests := func(status string) float64 {
		return h.metric("tollgate_requests_total", map[string]string{"route": "/v1/messages", "status": status})
	}

	t.Run("non-streaming", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		c := client(customer(cust))
		msg, err := c.Messages.New(ctx, params("claude-sonnet-4-5"))
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Content[0].Text; got != "Hi! My name is Claude." {
			t.Errorf("content %q", got)
		}
		if c := h.settled(cust, 1)[0]; c.InputTokens != 12012 || c.OutputTokens != 42 {
			t.Errorf("charge %+v", c)
		}
	})

	t.Run("streaming", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "10")
		c := client(customer(cust))
		stream := c.Messages.NewStreaming(ctx, params("claude-sonnet-4-5"))
		var acc anthropic.Message
		for stream.Next() {
			if err := acc.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if len(acc.Content) == 0 || acc.Content[0].Text == "" {
			t.Errorf("no text streamed: %+v", acc)
		}
		if c := h.settled(cust, 1)[0]; c.OutputTokens != 15 {
			t.Errorf("charge %+v", c)
		}
	})

	poor, suspended, rich := newCustomer(), newCustomer(), newCustomer()
	h.grant(poor, "0.000001")
	h.grant(suspended, "100")
	h.grant(rich, "100")
	if err := h.store.Suspend(ctx, suspended, "dp_test"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		client  anthropic.Client
		model   string
		status  int
		typ     anthropic.ErrorType
		message string // a prefix of error.message
	}{
		{
			name: "402 insufficient credits", client: client(customer(poor)), model: "claude-sonnet-4-5",
			status: 402, typ: anthropic.ErrorTypeBillingError,
			message: "insufficient credits: 0.000001 available, ",
		},
		{
			name: "403 suspended customer", client: client(customer(suspended)), model: "claude-sonnet-4-5",
			status: 403, typ: anthropic.ErrorTypePermissionError,
			message: "this customer is suspended while a payment dispute is open; requests are refused until the dispute is closed",
		},
		{
			name: "400 model not priced", client: client(customer(rich)), model: "claude-unpriced",
			status: 400, typ: anthropic.ErrorTypeInvalidRequestError,
			message: `model "claude-unpriced" is not priced on this route; add it to the route's prices, or add a "*" entry`,
		},
		{
			name: "401 no customer", client: client(), model: "claude-sonnet-4-5",
			status: 401, typ: anthropic.ErrorTypeAuthenticationError,
			message: "missing X-Tollgate-Customer header: name the customer this request is for",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := requests(fmt.Sprint(tc.status))
			c := tc.client
			_, err := c.Messages.New(ctx, params(tc.model))
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v is not an *anthropic.Error", err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Type() != tc.typ {
				t.Errorf("status %d type %q, want %d %q", apiErr.StatusCode, apiErr.Type(), tc.status, tc.typ)
			}
			// The Go SDK reads error.type and error.message wherever they
			// are; @ai-sdk/anthropic's schema also wants "type":"error" at
			// the top, as the Claude API sends it.
			if e := decodeAnthropicError(t, []byte(apiErr.RawJSON())); e.Error.Code == "" {
				t.Errorf("no error.code: %s", apiErr.RawJSON())
			}
			if !strings.HasPrefix(apiErr.Message, tc.message) {
				t.Errorf("message %q, want it to start with %q", apiErr.Message, tc.message)
			}
			// Error() shows the body, as the SDK prints any API error.
			if q, _ := json.Marshal(tc.message); !strings.Contains(err.Error(), strings.Trim(string(q), `"`)) {
				t.Errorf("err.Error() %q does not show tollgate's message", err)
			}
			// 4xx are not retried (402: x-should-retry: false).
			if got := requests(fmt.Sprint(tc.status)); got != before+1 {
				t.Errorf("the SDK sent %v requests, want 1", got-before)
			}
		})
	}
}
