package mockprovider

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/tidwall/gjson"
)

// OpenAI embeddings (API reference, "Embeddings"). Each vector is a unit
// vector drawn from a generator seeded by the model and the input, so the
// same input always gets the same embedding and different inputs get
// unrelated ones.

type embeddingList struct {
	Object string           `json:"object"`
	Data   []embedding      `json:"data"`
	Model  string           `json:"model"`
	Usage  embeddingsTokens `json:"usage"`
}

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingsTokens struct {
	PromptTokens int64 `json:"prompt_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

// maxDimensions bounds "dimensions": text-embedding-3-large's 3,072.
const maxDimensions = 3072

func (x *exchange) embeddings() {
	root := gjson.ParseBytes(x.body)
	model := x.model("text-embedding-ada-002")
	dims := int64(1536)
	if model == "text-embedding-3-large" {
		dims = 3072
	}
	if d := root.Get("dimensions"); d.Exists() {
		if d.Type != gjson.Number || d.Int() < 1 || d.Int() > maxDimensions || float64(d.Int()) != d.Num {
			x.d.fail(x.w, 400, "'dimensions' must be an integer from 1 to 3072")
			return
		}
		dims = d.Int()
	}
	// The inputs: a string, a list of strings, a list of token ids, or a
	// list of such lists.
	var inputs []gjson.Result
	in := root.Get("input")
	switch {
	case in.Type == gjson.String:
		inputs = []gjson.Result{in}
	case in.IsArray() && len(in.Array()) > 0 && in.Array()[0].Type == gjson.Number:
		inputs = []gjson.Result{in}
	case in.IsArray():
		inputs = in.Array()
	}
	if len(inputs) == 0 {
		x.d.fail(x.w, 400, "'input' must be a string, a list of strings, or a list of token arrays, and not empty")
		return
	}
	b64 := root.Get("encoding_format").Str == "base64"
	list := embeddingList{Object: "list", Model: model}
	for i, v := range inputs {
		var n int64
		switch {
		case v.Type == gjson.String:
			n = textTokens(v.Str)
		case v.IsArray():
			n = int64(len(v.Array()))
		default:
			x.d.fail(x.w, 400, "'input' must be a string, a list of strings, or a list of token arrays")
			return
		}
		list.Usage.PromptTokens += n
		vec := vector(model, v.Raw, int(dims))
		e := embedding{Object: "embedding", Index: i, Embedding: vec}
		if b64 {
			buf := make([]byte, 4*len(vec))
			for j, f := range vec {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(f))
			}
			e.Embedding = base64.StdEncoding.EncodeToString(buf)
		}
		list.Data = append(list.Data, e)
	}
	list.Usage.TotalTokens = list.Usage.PromptTokens
	x.writeJSON(list)
}

// vector returns the unit vector of dims dimensions for input.
func vector(model, input string, dims int) []float32 {
	seed := sha256.Sum256([]byte(model + "\x00" + input))
	rng := rand.New(rand.NewChaCha8(seed))
	v := make([]float64, dims)
	var norm float64
	for i := range v {
		v[i] = rng.NormFloat64()
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	out := make([]float32, dims)
	for i := range v {
		out[i] = float32(v[i] / norm)
	}
	return out
}
