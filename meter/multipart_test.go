package meter

import (
	"bytes"
	"mime/multipart"
	"testing"
)

func form(t *testing.T, fields map[string]string, files map[string][]byte) string {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary(testBoundary); err != nil {
		t.Fatal(err)
	}
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		fw, err := w.CreateFormFile(k, "upload.bin")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestParseRequestMultipart(t *testing.T) {
	ct := "multipart/form-data; boundary=" + testBoundary
	// 64,000 bytes of audio at the 2,000 B/s floor: 32 s.
	audio := form(t, map[string]string{"model": "whisper-1", "prompt": "tollgate", "response_format": "text"},
		map[string][]byte{"file": make([]byte, 64_000)})
	r := mustParse(t, OpenAIAudio, ct, audio)
	textBytes := int64(len("whisper-1") + len("tollgate") + len("text"))
	audioTokens := int64(32_000 * AudioTokensPerMinute / 60_000) // 666.67 → 667
	audioTokens++
	if r.Model != "whisper-1" || r.AudioMillis != 32_000 || r.InputTokens != textBytes+RequestOverheadTokens+audioTokens {
		t.Errorf("audio: %+v (want 32,000 ms, %d input tokens)", r, textBytes+RequestOverheadTokens+audioTokens)
	}
	edit := form(t, map[string]string{"model": "gpt-image-1", "prompt": "add a hat", "n": "2", "size": "1024x1024", "quality": "low", "stream": "true"},
		map[string][]byte{"image[]": make([]byte, 300_000), "mask": make([]byte, 1000)})
	r = mustParse(t, OpenAIImages, ct, edit)
	if r.Model != "gpt-image-1" || r.N != 2 || r.ImageSize != "1024x1024" || r.ImageQuality != "low" || !r.Stream || r.Images != 2 {
		t.Errorf("image edit: %+v", r)
	}
	wantTokens := int64(len("gpt-image-1")+len("add a hat")+len("2")+len("1024x1024")+len("low")+len("true")) + RequestOverheadTokens + 2*ImageTokenCeiling
	if r.InputTokens != wantTokens {
		t.Errorf("image edit InputTokens = %d, want %d", r.InputTokens, wantTokens)
	}
}
