package meter

import (
	"bytes"
	"errors"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// This file reads multipart/form-data request bodies: audio
// transcriptions and translations, image edits and variations.

// maxFormField bounds the bytes read from one multipart text field.
const maxFormField = 1 << 20

func isMultipart(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && strings.HasPrefix(mt, "multipart/")
}

// parseMultipart reads a multipart/form-data body: audio transcriptions
// and translations, image edits and variations.
func (r *Request) parseMultipart(contentType string, body []byte) error {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil || params["boundary"] == "" {
		return invalidf("the multipart Content-Type has no boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var textBytes, fileBytes, files, audioSize int64
	var audioHead []byte
	headLen := 64
	if r.API == OpenAIAudio {
		headLen = audioHeadBytes
	}
	head := make([]byte, 0, headLen)
	sawPart := false
	var seen uint8 // pricedFields read so far
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return invalidf("the multipart body is malformed: %v", err)
		}
		sawPart = true
		name := part.FormName()
		if part.FileName() != "" || name == "file" || name == "image" || name == "image[]" || name == "mask" {
			n, err := io.ReadFull(part, head[:cap(head)])
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				return invalidf("the multipart body is malformed: %v", err)
			}
			rest, err := io.Copy(io.Discard, part)
			if err != nil {
				return invalidf("the multipart body is malformed: %v", err)
			}
			size := int64(n) + rest
			if files == 0 && r.API == OpenAIAudio {
				audioHead, audioSize = head[:n], size
				head = make([]byte, 0, 64) // keep audioHead intact
			}
			files++
			fileBytes += size
			continue
		}
		val, err := io.ReadAll(io.LimitReader(part, maxFormField+1))
		if err != nil {
			return invalidf("the multipart body is malformed: %v", err)
		}
		if len(val) > maxFormField {
			return invalidf("the multipart field %q is longer than %d bytes", name, maxFormField)
		}
		textBytes += int64(len(val))
		s := string(val)
		// The fields that price the request must not be ambiguous: form
		// decoders disagree on which of several values wins.
		if bit, ok := pricedFields[name]; ok {
			if seen&bit != 0 {
				return invalidf("the multipart field %q is sent more than once; send it once", name)
			}
			seen |= bit
		}
		switch name {
		case "model":
			r.Model = s
		case "stream":
			r.Stream = s == "true"
		case "size":
			r.ImageSize = s
		case "quality":
			r.ImageQuality = s
		case "partial_images":
			r.partialImages = clampPartials(numOrNaN(s))
		case "n":
			if r.API == OpenAIImages {
				n, err := parseN(gjson.Result{Type: gjson.Number, Raw: s, Num: numOrNaN(s)})
				if err != nil {
					return err
				}
				r.N = n
			}
		}
	}
	if !sawPart {
		return invalidf("the multipart body has no parts")
	}
	tokens := textBytes + RequestOverheadTokens
	if r.API == OpenAIAudio {
		ms, least, ok := audioDuration(audioHead, audioSize)
		if ok {
			r.AudioMillis = ms
		} else {
			r.AudioMillis = ceilDiv(fileBytes*1000, AudioBytesPerSecond)
		}
		// The header is the client's claim: a charge estimated from it is
		// never below what the file's size allows at the format's highest
		// bitrate, nor at AudioMaxBytesPerSecond.
		r.audioMinMillis = max(least, ceilDiv(fileBytes*1000, AudioMaxBytesPerSecond))
		r.audioTokens = ceilDiv(r.AudioMillis*AudioTokensPerMinute, 60_000)
		r.InputTokens = tokens + r.audioTokens
		// The charge estimate, like the duration it charges, does not go
		// below what the file's size allows.
		r.estText = ceilDiv(textBytes, BytesPerToken)
		r.estInput = r.estText +
			ceilDiv(max(r.AudioMillis, r.audioMinMillis)*AudioTokensPerMinute, 60_000)
		return nil
	}
	r.Images = files
	r.InputTokens = tokens + files*ImageTokenCeiling
	r.estInput = ceilDiv(r.InputTokens-RequestOverheadTokens, BytesPerToken)
	return nil
}

// pricedFields are the multipart text fields ParseRequest reads, each
// with its bit in a set of fields seen.
var pricedFields = map[string]uint8{"model": 1, "stream": 2, "size": 4, "quality": 8, "n": 16}

func numOrNaN(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}
