package mockprovider

import (
	"strings"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/meter"
)

// OpenAI images (API reference, "Images": generations as JSON, edits and
// variations as multipart forms; GPT image models stream
// image_generation.* and image_edit.* events). GPT image models report
// token usage; DALL·E models report only the images, which tollgate then
// charges per image.

// pngPixel is a 1×1 PNG: every image the mock makes.
const pngPixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAAEElEQVR4nGLymvAIEAAA//8C7AG/KI16vwAAAABJRU5ErkJggg=="

type imageList struct {
	Created      int64        `json:"created"`
	Background   string       `json:"background,omitempty"`
	Data         []imageDatum `json:"data"`
	OutputFormat string       `json:"output_format,omitempty"`
	Quality      string       `json:"quality,omitempty"`
	Size         string       `json:"size,omitempty"`
	Usage        *imageUsage  `json:"usage,omitempty"`
}

type imageDatum struct {
	B64JSON       string `json:"b64_json,omitempty"`
	URL           string `json:"url,omitempty"`
	RevisedPrompt string `json:"revised_prompt,omitempty"`
}

type imageUsage struct {
	InputTokens        int64             `json:"input_tokens"`
	InputTokensDetails imageInputDetails `json:"input_tokens_details"`
	OutputTokens       int64             `json:"output_tokens"`
	TotalTokens        int64             `json:"total_tokens"`
}

type imageInputDetails struct {
	ImageTokens int64 `json:"image_tokens"`
	TextTokens  int64 `json:"text_tokens"`
}

type imageEvent struct {
	Type              string      `json:"type"`
	B64JSON           string      `json:"b64_json"`
	CreatedAt         int64       `json:"created_at"`
	Size              string      `json:"size"`
	Quality           string      `json:"quality"`
	Background        string      `json:"background"`
	OutputFormat      string      `json:"output_format"`
	PartialImageIndex *int        `json:"partial_image_index,omitempty"`
	Usage             *imageUsage `json:"usage,omitempty"`
}

// imageForm is what an images request asks for, from its JSON body or
// its multipart form.
type imageForm struct {
	prompt         string
	images         int64 // input images (edits, variations), MediaTokens each
	responseFormat string
	partials       int64
}

func (x *exchange) images() {
	f, problem := x.imageForm()
	if problem != "" {
		x.d.fail(x.w, 400, problem)
		return
	}
	model := x.model("dall-e-2")
	gpt := strings.HasPrefix(model, "gpt-image")
	size := x.req.ImageSize
	if size == "" || size == "auto" {
		size = "1024x1024"
	}
	quality := x.req.ImageQuality
	if gpt && (quality == "" || quality == "auto") {
		quality = "medium"
	}
	n := x.req.N
	created := x.p.now().Unix()
	if !gpt {
		// DALL·E: the images, no usage. A URL answer is a data: URL,
		// since the mock hosts no files.
		list := imageList{Created: created}
		for range n {
			d := imageDatum{URL: "data:image/png;base64," + pngPixel}
			if f.responseFormat == "b64_json" {
				d = imageDatum{B64JSON: pngPixel}
			}
			if model == "dall-e-3" {
				d.RevisedPrompt = f.prompt
			}
			list.Data = append(list.Data, d)
		}
		x.writeJSON(list)
		return
	}

	text := textTokens(f.prompt)
	in := imageUsage{InputTokensDetails: imageInputDetails{ImageTokens: f.images * MediaTokens, TextTokens: text}}
	in.InputTokens = in.InputTokensDetails.ImageTokens + text
	each := meter.ImageOutputTokens(size, quality)
	if !x.req.Stream {
		u := in
		u.OutputTokens = each * n
		u.TotalTokens = u.InputTokens + u.OutputTokens
		list := imageList{Created: created, Background: "opaque", OutputFormat: "png", Quality: quality, Size: size, Usage: &u}
		for range n {
			list.Data = append(list.Data, imageDatum{B64JSON: pngPixel})
		}
		x.writeJSON(list)
		return
	}

	// A stream sends partial_images partial images, then each image in a
	// completed event with its own usage; the input is counted once, on
	// the first image, and each partial image adds
	// meter.ImagePartialTokens output tokens.
	kind := "image_generation"
	if strings.HasSuffix(x.path, "/edits") {
		kind = "image_edit"
	}
	ev := imageEvent{B64JSON: pngPixel, CreatedAt: created, Size: size, Quality: quality, Background: "opaque", OutputFormat: "png"}
	s := x.startStream()
	for i := range n {
		for k := range int(f.partials) {
			p := ev
			p.Type, p.PartialImageIndex = kind+".partial_image", &k
			s.event(p.Type, p)
		}
		u := imageUsage{OutputTokens: each + f.partials*meter.ImagePartialTokens}
		if i == 0 {
			u.InputTokens, u.InputTokensDetails = in.InputTokens, in.InputTokensDetails
		}
		u.TotalTokens = u.InputTokens + u.OutputTokens
		done := ev
		done.Type, done.Usage = kind+".completed", &u
		s.event(done.Type, done)
	}
}

// imageForm reads the request's prompt, input images, response_format and
// partial_images, or says what the provider would refuse.
func (x *exchange) imageForm() (f imageForm, problem string) {
	mf, multi, err := x.readForm()
	switch {
	case err != nil:
		return f, err.Error()
	case multi:
		f.prompt, f.responseFormat, f.images = mf.fields["prompt"], mf.fields["response_format"], mf.files
		if v := mf.fields["partial_images"]; len(v) == 1 && v[0] >= '0' && v[0] <= '3' {
			f.partials = int64(v[0] - '0')
		}
	default:
		root := gjson.ParseBytes(x.body)
		f.prompt = root.Get("prompt").Str
		f.responseFormat = root.Get("response_format").Str
		f.partials = min(max(root.Get("partial_images").Int(), 0), 3)
		f.images = int64(len(root.Get("images").Array()))
	}
	if !strings.HasSuffix(x.path, "/variations") && f.prompt == "" {
		return f, "Missing required parameter: 'prompt'."
	}
	return f, ""
}
