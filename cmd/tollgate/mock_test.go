package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
	tgusage "github.com/tollgate-dev/tollgate/usage"
)

// exampleOnFreePorts writes config.example.yaml into dir with its listen
// addresses on free loopback ports, and returns its path.
func exampleOnFreePorts(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for _, r := range [][2]string{
		{"\nlisten: 127.0.0.1:8080\n", "\nlisten: 127.0.0.1:0\n"},
		{"\n  listen: \":9090\"\n", "\n  listen: \"127.0.0.1:0\"\n"},
	} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("config.example.yaml no longer has %q", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	path := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// charges waits until customer has n charge entries and returns them,
// newest first.
func charges(t *testing.T, admin, customer string, n int) []ledger.Entry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, admin+"/v1/customers/"+customer+"/ledger?limit=100", nil)
		req.Header.Set("Authorization", "Bearer "+serveToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct{ Entries []ledger.Entry }
		err = json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var out []ledger.Entry
		for _, e := range page.Entries {
			if e.Kind == ledger.KindCharge {
				out = append(out, e)
			}
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d charges, want %d: %+v", customer, len(out), n, page.Entries)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeMock serves config.example.yaml with --mock: no provider key,
// and a REDIS_URL that points nowhere, which --mock must ignore. Every API
// answers through the proxy in a shape the official OpenAI SDK reads, and
// is charged by the mock's documented usage. Routes still go to the mock
// after a reload, and the throwaway store is gone after exit.
func TestServeMock(t *testing.T) {
	dir := t.TempDir()
	path := exampleOnFreePorts(t, dir)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", serveToken)
	t.Setenv("REDIS_URL", "redis://127.0.0.1:1/0")
	unsetenv(t, "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY", "STRIPE_LIVEMODE")
	c := startChild(t, "serve", "--config", path, "--mock")
	c.logged(t, "MOCK MODE (--mock)")
	var warn struct{ Store, Mock string }
	for _, line := range strings.Split(c.stderr.String(), "\n") {
		if strings.Contains(line, "MOCK MODE") {
			if err := json.Unmarshal([]byte(line), &warn); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := os.Stat(warn.Store); err != nil || !strings.HasPrefix(warn.Mock, "http://127.0.0.1:") {
		t.Fatalf("the mock's store %q: %v; mock at %q", warn.Store, err, warn.Mock)
	}
	// What --mock replaces is not warned about; the rest is.
	if out := c.stderr.String(); strings.Contains(out, "OPENAI_API_KEY") || strings.Contains(out, "REDIS_URL") || !strings.Contains(out, "STRIPE_WEBHOOK_SECRET") {
		t.Errorf("warnings:\n%s", out)
	}

	ctx := context.Background()
	sdk := func(customer string) openai.Client {
		adminCredit(t, c.admin, customer, "10")
		return openai.NewClient(option.WithBaseURL(c.proxy+"/v1/"), option.WithAPIKey("unused"),
			option.WithHeader("X-Tollgate-Customer", customer), option.WithMaxRetries(0))
	}
	hello := openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	}
	tokens := func(in, out int64) tgusage.Tokens { return tgusage.Tokens{InputTokens: in, OutputTokens: out} }

	t.Run("chat", func(t *testing.T) {
		client := sdk("chat")
		comp, err := client.Chat.Completions.New(ctx, hello)
		if err != nil {
			t.Fatal(err)
		}
		if got := comp.Choices[0].Message.Content; got != "You said: Hello" {
			t.Errorf("content %q", got)
		}
		stream := client.Chat.Completions.NewStreaming(ctx, hello)
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; got != "You said: Hello" || acc.Usage.TotalTokens != 0 {
			t.Errorf("stream: content %q, usage %+v (the client did not ask for usage)", got, acc.Usage)
		}
		for _, e := range charges(t, c.admin, "chat", 2) {
			// 3 input at 0.15 and 4 output at 0.60 per 1M: 0.00000285 → 0.000003.
			if e.Tokens != tokens(3, 4) || e.Amount != -mustParse(t, "0.000003") || e.Model != "gpt-4o-mini" {
				t.Errorf("charge %+v", e)
			}
		}
	})

	t.Run("chat at the priority tier", func(t *testing.T) {
		// Fast mode is served at "priority", which the mock reports as
		// OpenAI does, so the price's service_tier.priority rates apply.
		client := sdk("priority")
		fast := hello
		fast.ServiceTier = openai.ChatCompletionNewParamsServiceTierFast
		comp, err := client.Chat.Completions.New(ctx, fast)
		if err != nil {
			t.Fatal(err)
		}
		if comp.ServiceTier != openai.ChatCompletionServiceTierPriority {
			t.Errorf("service_tier %q", comp.ServiceTier)
		}
		// 3 input at 0.25 and 4 output at 1.00 per 1M: 0.00000475 → 0.000005.
		if e := charges(t, c.admin, "priority", 1)[0]; e.Tokens != tokens(3, 4) || e.Amount != -mustParse(t, "0.000005") {
			t.Errorf("charge %+v", e)
		}
	})

	t.Run("responses", func(t *testing.T) {
		client := sdk("responses")
		params := responses.ResponseNewParams{Model: "gpt-4.1", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hello")}}
		r, err := client.Responses.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.OutputText(); got != "You said: Hello" {
			t.Errorf("output %q", got)
		}
		stream := client.Responses.NewStreaming(ctx, params)
		var text string
		for stream.Next() {
			if ev := stream.Current(); ev.Type == "response.output_text.delta" {
				text += ev.Delta
			}
		}
		if err := stream.Err(); err != nil || text != "You said: Hello" {
			t.Errorf("stream: %q, %v", text, err)
		}
		for _, e := range charges(t, c.admin, "responses", 2) {
			if e.Tokens != tokens(2, 4) {
				t.Errorf("charge %+v", e)
			}
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		client := sdk("embeddings")
		res, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:          openai.EmbeddingModelTextEmbedding3Small,
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello world", "hi"}},
			EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Data) != 2 || len(res.Data[0].Embedding) != 1536 || res.Usage.PromptTokens != 4 {
			t.Errorf("%d embeddings of %d dimensions, usage %+v", len(res.Data), len(res.Data[0].Embedding), res.Usage)
		}
		if e := charges(t, c.admin, "embeddings", 1)[0]; e.Tokens != tokens(4, 0) {
			t.Errorf("charge %+v", e)
		}
	})

	t.Run("images", func(t *testing.T) {
		client := sdk("images")
		res, err := client.Images.Generate(ctx, openai.ImageGenerateParams{Model: openai.ImageModel("gpt-image-1"), Prompt: "a red fox",
			Size: openai.ImageGenerateParamsSize1024x1024, Quality: openai.ImageGenerateParamsQualityLow})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Data) != 1 || res.Data[0].B64JSON == "" || res.Usage.OutputTokens != 272 {
			t.Errorf("images %+v", res)
		}
		// gpt-image-1's output is image tokens: 3 input at 5.00 and 272
		// image output at 40.00 (image_output defaults to output) per 1M.
		want := tgusage.Tokens{InputTokens: 3, OutputTokens: 272, ImageOutputTokens: 272}
		if e := charges(t, c.admin, "images", 1)[0]; e.Tokens != want || e.Amount != -mustParse(t, "0.010895") {
			t.Errorf("charge %+v", e)
		}
	})

	t.Run("audio", func(t *testing.T) {
		client := sdk("audio")
		// config.example.yaml prices no speech model: take six seconds of
		// speech from the mock itself (75 characters at 750 a minute).
		speech, err := http.Post(warn.Mock+"/openai.audio/v1/audio/speech", "application/json",
			strings.NewReader(`{"model":"tts-1","voice":"alloy","input":"`+strings.Repeat("x", 75)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		mp3, err := io.ReadAll(speech.Body)
		speech.Body.Close()
		if err != nil || speech.Header.Get("Content-Type") != "audio/mpeg" {
			t.Fatalf("speech: %v, %s", err, speech.Header.Get("Content-Type"))
		}
		tr, err := client.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{Model: openai.AudioModel("whisper-1"),
			File: openai.File(bytes.NewReader(mp3), "speech.mp3", "audio/mpeg")})
		if err != nil {
			t.Fatal(err)
		}
		if tr.Text != "Mock transcript of 6 seconds of audio." {
			t.Errorf("transcript %q", tr.Text)
		}
		// whisper-1 at 0.006 a minute: 6 s cost 0.0006.
		if e := charges(t, c.admin, "audio", 1)[0]; e.Amount != -mustParse(t, "0.000600") {
			t.Errorf("charge %+v", e)
		}
	})

	t.Run("anthropic", func(t *testing.T) {
		adminCredit(t, c.admin, "claude", "10")
		req, _ := http.NewRequest(http.MethodPost, c.proxy+"/v1/messages", strings.NewReader(
			`{"model":"claude-haiku-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Hello"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tollgate-Customer", "claude")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("X-Tollgate-Mock") != "true" || !bytes.Contains(body, []byte("event: message_stop\n")) {
			t.Fatalf("%d %v\n%s", res.StatusCode, res.Header, body)
		}
		if e := charges(t, c.admin, "claude", 1)[0]; e.Tokens != tokens(3, 4) {
			t.Errorf("charge %+v", e)
		}
	})

	// A reload keeps the routes on the mock and the store where it is.
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.logged(t, "config reloaded")
	if strings.Contains(c.stderr.String(), "only takes effect after a restart") {
		t.Errorf("the reload warned about a restart-only setting:\n%s", c.stderr.String())
	}
	adminCredit(t, c.admin, "after-reload", "1")
	if res, data := chat(t, c.proxy, "after-reload", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`); res.StatusCode != 200 ||
		gjson.GetBytes(data, "choices.0.message.content").Str != "You said: Hello" {
		t.Errorf("after the reload: %d %s", res.StatusCode, data)
	}

	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		c.exited <- err
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, c.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if _, err := os.Stat(filepath.Dir(warn.Store)); !os.IsNotExist(err) {
		t.Errorf("the throwaway store's directory is still there after exit: %v", err)
	}
}
