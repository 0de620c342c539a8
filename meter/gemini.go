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

// protoField returns the key under which an object holds the field
// spelled camel or snake, that key's value, and whether it is there,
// given the raw values under each spelling ("" when absent); a body
// spelling it both ways is refused. Absent, the key is camel, the
// spelling Google's SDKs send.
func protoField(camelRaw, snakeRaw, camel, snake string) (key string, v gjson.Result, err error) {
	switch {
	case camelRaw != "" && snakeRaw != "":
		return "", gjson.Result{}, invalidf("the request body sets both %q and %q, two spellings of one field; send one", camel, snake)
	case snakeRaw != "":
		return snake, gjson.Parse(snakeRaw), nil
	}
	return camel, gjson.Parse(camelRaw), nil
}

// firstMembers returns the raw values of obj's first members named a and
// b ("" for each it lacks; both "" when obj is not an object), in one
// walk.
func firstMembers(obj, a, b string) (va, vb string) {
	if !isObject(obj) {
		return "", ""
	}
	for it := iterate(obj); ; {
		k, v, ok := it.next()
		if !ok {
			return va, vb
		}
		switch {
		case k == a && va == "":
			va = v
		case k == b && vb == "":
			vb = v
		}
	}
}

// parseGemini reads a generateContent body: {"contents": […],
// "systemInstruction", "tools", "generationConfig": {"maxOutputTokens",
// "candidateCount", …}, "cachedContent", …}, whose top-level fields
// parseJSON has read into fs.
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
func (r *Request) parseGemini(fs *bodyFields, body []byte) error {
	cfgKey, cfg, err := protoField(fs[fGenerationConfig], fs[fGenerationConfigSnake], "generationConfig", "generation_config")
	if err != nil {
		return err
	}
	capKey := "maxOutputTokens"
	switch {
	case cfg.IsObject():
		// One walk for the keys and the four fields read.
		var keyBuf [16]string
		keys := keyBuf[:0]
		var capC, capS, nC, nS string
		for it := iterate(cfg.Raw); ; {
			k, v, ok := it.next()
			if !ok {
				break
			}
			keys = append(keys, k)
			var f *string
			switch k {
			case "maxOutputTokens":
				f = &capC
			case "max_output_tokens":
				f = &capS
			case "candidateCount":
				f = &nC
			case "candidate_count":
				f = &nS
			default:
				continue
			}
			if *f == "" {
				*f = v
			}
		}
		if k, dup := duplicateKey(keys); dup {
			return duplicateKeyError(cfgKey + "." + k)
		}
		var v gjson.Result
		if capKey, v, err = protoField(capC, capS, "maxOutputTokens", "max_output_tokens"); err != nil {
			return err
		}
		if v.Type == gjson.Number && v.Num > 0 {
			r.MaxOutputTokens = capInt(v)
			r.capsMax = r.MaxOutputTokens
		}
		nKey, n, err := protoField(nC, nS, "candidateCount", "candidate_count")
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
	for it := iterate(fs[fContents]); ; {
		_, at, ok := it.nextAt()
		if !ok {
			break
		}
		it.i = geminiImagesAt(it.s, at, &images, &imageBytes)
	}
	if _, sys, err := protoField(fs[fSystemInstruction], fs[fSystemInstructionSnake], "systemInstruction", "system_instruction"); err != nil {
		return err
	} else if sys.IsObject() {
		geminiImagesAt(sys.Raw, 0, &images, &imageBytes)
	}
	tokens += images*ImageTokenCeiling - imageBytes
	tokens += toolFloors(fs[fTools])
	r.Images = images
	r.InputTokens = tokens
	r.estInput = ceilDiv(tokens-RequestOverheadTokens, BytesPerToken)
	return nil
}

// geminiImagesAt counts the images among the parts of the Content at
// s[i] (valid JSON): the parts whose inlineData has an image/* mimeType.
// It crosses the Content once and returns the index past it.
func geminiImagesAt(s string, i int, images, imageBytes *int64) int {
	if s[i] != '{' {
		return skipRawValue(s, i)
	}
	seen := false
	for content := iterateAt(s, i); ; {
		k, at, ok := content.nextAt()
		if !ok {
			return content.i
		}
		if k != "parts" || seen {
			content.i = skipRawValue(s, at)
			continue
		}
		// The first "parts", as gjson's Get reads it.
		seen = true
		if s[at] != '{' && s[at] != '[' {
			content.i = skipRawValue(s, at) // a scalar part is no image
			continue
		}
		for parts := iterateAt(s, at); ; {
			_, p, ok := parts.nextAt()
			if !ok {
				content.i = parts.i
				break
			}
			if s[p] != '{' {
				parts.i = skipRawValue(s, p)
				continue
			}
			// The first of each spelling, in the one crossing of the part.
			var camel, snake string
			part := iterateAt(s, p)
			for {
				k, v, ok := part.next()
				if !ok {
					break
				}
				switch {
				case k == "inlineData" && camel == "":
					camel = v
				case k == "inline_data" && snake == "":
					snake = v
				}
			}
			parts.i = part.i
			// Either spelling, not both (then neither is read).
			_, data, _ := protoField(camel, snake, "inlineData", "inline_data")
			if !data.IsObject() {
				continue
			}
			camel, snake = firstMembers(data.Raw, "mimeType", "mime_type")
			_, mt, _ := protoField(camel, snake, "mimeType", "mime_type")
			if mt.Type == gjson.String && strings.HasPrefix(strings.ToLower(mt.Str), "image/") {
				*images++
				*imageBytes += int64(parts.i - p)
			}
		}
	}
}
