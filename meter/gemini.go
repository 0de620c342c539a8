package meter

import (
	"math"
	"strings"

	"github.com/tidwall/gjson"
)

// This file holds what is particular to google.gemini requests: the model
// and the method named by the path, and the body of a generateContent
// request (Gemini API reference, "Generating content").
//
// The Gemini API decodes JSON as protocol buffers do: every field may be
// spelled in lowerCamelCase or as its proto name in snake_case
// ("generationConfig" or "generation_config"), and Google's own REST
// examples use both. tollgate reads either spelling, edits the one the
// client used, and refuses a body that spells one field both ways, since
// which of the two the API reads is not documented.

// GeminiTarget reads a generateContent request path: the model and
// whether the method streams. It accepts the Gemini API's
// /v1beta/models/{model}:generateContent and :streamGenerateContent (and
// /v1/…), and Vertex AI's
// /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:…: the
// last segment is {model}:{method} and the one before it "models". ok is
// false for any other path (countTokens, embedContent, files, cached
// contents), which a google.gemini route does not meter.
func GeminiTarget(path string) (model string, stream, ok bool) {
	slash := strings.LastIndexByte(path, '/')
	if slash < 0 || !strings.HasSuffix(path[:slash], "/models") {
		return "", false, false
	}
	model, method, found := strings.Cut(path[slash+1:], ":")
	if !found || model == "" {
		return "", false, false
	}
	switch method {
	case "generateContent":
		return model, false, true
	case "streamGenerateContent":
		return model, true, true
	}
	return "", false, false
}

// AzureDeployment returns the deployment an Azure OpenAI path names:
// {deployment} in /openai/deployments/{deployment}/chat/completions (and
// the other operations under a deployment). ok is false for a path
// without one, such as the v1 API's /openai/v1/chat/completions, whose
// body names the deployment in "model".
func AzureDeployment(path string) (deployment string, ok bool) {
	const seg = "/deployments/"
	i := strings.Index(path, seg)
	if i < 0 {
		return "", false
	}
	rest := path[i+len(seg):]
	deployment, _, _ = strings.Cut(rest, "/")
	return deployment, deployment != ""
}

// protoField returns the key under which obj holds the field spelled
// camel or snake, that key's value, and whether it is there; a body
// spelling it both ways is refused. Absent, the key is camel, the
// spelling Google's SDKs send.
func protoField(obj gjson.Result, camel, snake string) (key string, v gjson.Result, err error) {
	c, s := obj.Get(camel), obj.Get(snake)
	switch {
	case c.Exists() && s.Exists():
		return "", gjson.Result{}, invalidf("the request body sets both %q and %q, two spellings of one field; send one", camel, snake)
	case s.Exists():
		return snake, s, nil
	}
	return camel, c, nil
}

// parseGemini reads a generateContent body: {"contents": […],
// "systemInstruction", "tools", "generationConfig": {"maxOutputTokens",
// "candidateCount", …}, "cachedContent", …}.
//
// The output cap is generationConfig.maxOutputTokens, which bounds the
// thinking tokens and the answer together, per candidate (measured:
// thoughtsTokenCount + candidatesTokenCount stops at the cap with
// finishReason MAX_TOKENS, googleapis/python-genai#2062 and #811, though
// Google's thinking guide calls them separate); candidateCount is the
// request's n.
// Inline data counts by its bytes, except images (inlineData whose
// mimeType is image/*), which count ImageTokenCeiling each: Gemini counts
// an image as 258 tokens per 768×768 tile, while audio (32 tokens a
// second), video (263 a second) and PDF pages (258 each) always take more
// bytes than tokens. fileData and cachedContent reference data held
// upstream, which the body cannot bound (see Request.InputTokens).
func (r *Request) parseGemini(root gjson.Result, body []byte) error {
	cfgKey, cfg, err := protoField(root, "generationConfig", "generation_config")
	if err != nil {
		return err
	}
	capKey := "maxOutputTokens"
	switch {
	case cfg.IsObject():
		if k, dup := duplicateKey(cfg); dup {
			return duplicateKeyError(cfgKey + "." + k)
		}
		var v gjson.Result
		if capKey, v, err = protoField(cfg, "maxOutputTokens", "max_output_tokens"); err != nil {
			return err
		}
		if v.Type == gjson.Number && v.Num > 0 {
			r.MaxOutputTokens = capInt(v)
		}
		nKey, n, err := protoField(cfg, "candidateCount", "candidate_count")
		if err != nil {
			return err
		}
		if n.Exists() && n.Type != gjson.Null {
			if n.Type != gjson.Number || math.IsNaN(n.Num) || n.Num != math.Trunc(n.Num) || n.Num < 1 || n.Num > MaxN {
				return invalidf(`"%s.%s" must be an integer from 1 to %d, not %s`, cfgKey, nKey, MaxN, n.Raw)
			}
			r.N = int64(n.Num)
		}
	case cfg.Exists() && cfg.Type != gjson.Null:
		return invalidf(`"%s" must be an object, not %s`, cfgKey, cfg.Raw)
	}
	r.capPath = cfgKey + "." + capKey

	tokens := int64(len(body)) + RequestOverheadTokens
	var images, imageBytes int64
	countParts := func(content gjson.Result) {
		content.Get("parts").ForEach(func(_, p gjson.Result) bool {
			if !p.IsObject() {
				return true
			}
			_, data, _ := protoField(p, "inlineData", "inline_data")
			if !data.IsObject() {
				return true
			}
			_, mt, _ := protoField(data, "mimeType", "mime_type")
			if mt.Type == gjson.String && strings.HasPrefix(strings.ToLower(mt.Str), "image/") {
				images++
				imageBytes += int64(len(p.Raw))
			}
			return true
		})
	}
	root.Get("contents").ForEach(func(_, c gjson.Result) bool {
		countParts(c)
		return true
	})
	if _, sys, err := protoField(root, "systemInstruction", "system_instruction"); err != nil {
		return err
	} else if sys.IsObject() {
		countParts(sys)
	}
	tokens += images*ImageTokenCeiling - imageBytes
	root.Get("tools").ForEach(func(_, v gjson.Result) bool {
		tokens += max(0, ToolTokenFloor-int64(len(v.Raw)))
		return true
	})
	r.Images = images
	r.InputTokens = tokens
	r.estInput = ceilDiv(tokens-RequestOverheadTokens, BytesPerToken)
	return nil
}
