package mockprovider

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/meter"
)

// OpenAI audio (API reference, "Audio"): transcriptions and translations
// take a multipart upload and answer JSON (whisper-1 with a duration
// usage, GPT transcription models with token usage), text, SRT or VTT, or
// a stream of transcript.text.* events; speech takes JSON and answers
// audio bytes, or speech.audio.* events with token usage.

type transcript struct {
	Task     string           `json:"task,omitempty"`
	Language string           `json:"language,omitempty"`
	Duration *float64         `json:"duration,omitempty"`
	Text     string           `json:"text"`
	Segments []segment        `json:"segments,omitempty"`
	Usage    *transcriptUsage `json:"usage,omitempty"`
}

type segment struct {
	ID               int        `json:"id"`
	Seek             int        `json:"seek"`
	Start            float64    `json:"start"`
	End              float64    `json:"end"`
	Text             string     `json:"text"`
	Tokens           []struct{} `json:"tokens"`
	Temperature      float64    `json:"temperature"`
	AvgLogprob       float64    `json:"avg_logprob"`
	CompressionRatio float64    `json:"compression_ratio"`
	NoSpeechProb     float64    `json:"no_speech_prob"`
}

// transcriptUsage is {"type":"duration","seconds"} (whisper-1) or
// {"type":"tokens",…} (GPT transcription models).
type transcriptUsage struct {
	Type              string             `json:"type"`
	Seconds           *int64             `json:"seconds,omitempty"`
	InputTokens       *int64             `json:"input_tokens,omitempty"`
	InputTokenDetails *audioInputDetails `json:"input_token_details,omitempty"`
	OutputTokens      *int64             `json:"output_tokens,omitempty"`
	TotalTokens       *int64             `json:"total_tokens,omitempty"`
}

type audioInputDetails struct {
	TextTokens  int64 `json:"text_tokens"`
	AudioTokens int64 `json:"audio_tokens"`
}

type transcriptDelta struct {
	Type     string     `json:"type"`
	Delta    string     `json:"delta"`
	Logprobs []struct{} `json:"logprobs"`
}

type transcriptDone struct {
	Type     string           `json:"type"`
	Text     string           `json:"text"`
	Logprobs []struct{}       `json:"logprobs"`
	Usage    *transcriptUsage `json:"usage"`
}

type speechDelta struct {
	Type  string `json:"type"`
	Audio string `json:"audio"`
}

type speechDone struct {
	Type  string      `json:"type"`
	Usage speechUsage `json:"usage"`
}

type speechUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

// maxSpeechChars is OpenAI's limit on a speech input.
const maxSpeechChars = 4096

func (x *exchange) audio() {
	switch {
	case strings.HasSuffix(x.path, "/speech"):
		x.speech()
	case strings.HasSuffix(x.path, "/transcriptions"), strings.HasSuffix(x.path, "/translations"):
		x.transcribe()
	default:
		x.d.fail(x.w, http.StatusNotFound, "mock provider: no audio endpoint at "+x.path+"; the mock answers /v1/audio/speech, /v1/audio/transcriptions and /v1/audio/translations")
	}
}

// audioTokens converts a duration to audio tokens at
// meter.AudioTokensPerMinute.
func audioTokens(millis int64) int64 {
	return ceilDiv(millis*meter.AudioTokensPerMinute, 60_000)
}

func (x *exchange) transcribe() {
	f, multi, err := x.readForm()
	switch {
	case err != nil:
		x.d.fail(x.w, 400, err.Error())
		return
	case !multi || f.files == 0:
		x.d.fail(x.w, 400, "Missing required parameter: 'file' (send a multipart/form-data upload).")
		return
	}
	model := x.model("whisper-1")
	millis := x.req.AudioMillis
	seconds := float64(millis) / 1000
	translate := strings.HasSuffix(x.path, "/translations")
	what, task := "transcript", "transcribe"
	if translate {
		what, task = "translation", "translate"
	}
	text := fmt.Sprintf("Mock %s of %s seconds of audio.", what, strconv.FormatFloat(seconds, 'f', -1, 64))

	// whisper-1 reports the duration (whole seconds, rounded up); the GPT
	// transcription models report tokens: the audio's, the prompt's, and
	// the transcript's.
	var u transcriptUsage
	if strings.HasPrefix(model, "whisper") {
		s := ceilDiv(millis, 1000)
		u = transcriptUsage{Type: "duration", Seconds: &s}
	} else {
		d := audioInputDetails{TextTokens: textTokens(f.fields["prompt"]), AudioTokens: audioTokens(millis)}
		in, out := d.TextTokens+d.AudioTokens, textTokens(text)
		total := in + out
		u = transcriptUsage{Type: "tokens", InputTokens: &in, InputTokenDetails: &d, OutputTokens: &out, TotalTokens: &total}
	}

	if x.req.Stream && u.Type == "tokens" && !translate {
		s := x.startStream()
		for _, piece := range pieces(text) {
			s.event("", transcriptDelta{Type: "transcript.text.delta", Delta: piece, Logprobs: []struct{}{}})
		}
		s.event("", transcriptDone{Type: "transcript.text.done", Text: text, Logprobs: []struct{}{}, Usage: &u})
		return
	}
	switch format := f.fields["response_format"]; format {
	case "", "json":
		x.writeJSON(transcript{Text: text, Usage: &u})
	case "verbose_json":
		x.writeJSON(transcript{Task: task, Language: "english", Duration: &seconds, Text: text, Usage: &u,
			Segments: []segment{{End: seconds, Text: " " + text, Tokens: []struct{}{}, CompressionRatio: 1}}})
	case "text":
		x.writeText("text/plain; charset=utf-8", text+"\n")
	case "srt":
		x.writeText("application/x-subrip", "1\n00:00:00,000 --> "+timestamp(millis, ',')+"\n"+text+"\n\n")
	case "vtt":
		x.writeText("text/vtt; charset=utf-8", "WEBVTT\n\n00:00:00.000 --> "+timestamp(millis, '.')+"\n"+text+"\n\n")
	default:
		x.d.fail(x.w, 400, fmt.Sprintf("response_format %q is not one of json, text, srt, verbose_json, vtt", format))
	}
}

// timestamp formats millis as HH:MM:SS followed by sep and milliseconds.
func timestamp(millis int64, sep byte) string {
	return fmt.Sprintf("%02d:%02d:%02d%c%03d", millis/3_600_000, millis/60_000%60, millis/1000%60, sep, millis%1000)
}

func (x *exchange) writeText(contentType, s string) {
	x.w.Header().Set("Content-Type", contentType)
	x.w.Header().Set("Content-Length", strconv.Itoa(len(s)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write([]byte(s)) // the client went away; nothing to do
}

func (x *exchange) speech() {
	root := gjson.ParseBytes(x.body)
	input := root.Get("input")
	switch {
	case input.Type != gjson.String || input.Str == "":
		x.d.fail(x.w, 400, "Missing required parameter: 'input'.")
		return
	case utf8.RuneCountInString(input.Str) > maxSpeechChars:
		x.d.fail(x.w, 400, fmt.Sprintf("'input' is longer than %d characters", maxSpeechChars))
		return
	}
	// The duration of speech at meter.SpeechCharsPerMinute (scaled by
	// "speed"), the rule tollgate estimates speech with.
	millis := x.req.AudioMillis
	format := root.Get("response_format").Str
	if format == "" {
		format = "mp3"
	}
	var audio []byte
	contentType := ""
	switch format {
	case "mp3":
		audio, contentType = silentMP3(millis), "audio/mpeg"
	case "wav":
		audio, contentType = silentWAV(millis), "audio/wav"
	case "pcm":
		audio, contentType = make([]byte, pcmBytes(millis)), "audio/pcm"
	default:
		x.d.fail(x.w, 400, fmt.Sprintf("mock provider: response_format %q is not made by the mock; use mp3, wav or pcm", format))
		return
	}
	if root.Get("stream_format").Str != "sse" {
		x.w.Header().Set("Content-Type", contentType)
		x.w.Header().Set("Content-Length", strconv.Itoa(len(audio)))
		x.w.WriteHeader(http.StatusOK)
		_, _ = x.w.Write(audio) // the client went away; nothing to do
		return
	}
	u := speechUsage{
		InputTokens:  textTokens(input.Str + root.Get("instructions").Str),
		OutputTokens: audioTokens(millis),
	}
	u.TotalTokens = u.InputTokens + u.OutputTokens
	s := x.startStream()
	const chunk = 16 << 10
	for len(audio) > 0 {
		n := min(chunk, len(audio))
		s.event("", speechDelta{Type: "speech.audio.delta", Audio: base64.StdEncoding.EncodeToString(audio[:n])})
		audio = audio[n:]
	}
	s.event("", speechDone{Type: "speech.audio.done", Usage: u})
}

// Speech audio is silence. MP3: MPEG-1 Layer III frames at 48 kHz and
// 32 kbit/s, mono, 96 bytes and 24 ms each, whose all-zero side
// information decodes to silence. WAV and PCM: 24 kHz 16-bit mono, as
// OpenAI's pcm format.
const (
	mp3FrameBytes  = 96
	mp3FrameMillis = 24
	pcmRate        = 24_000
)

var mp3Header = [4]byte{0xFF, 0xFB, 0x14, 0xC0}

func silentMP3(millis int64) []byte {
	frames := ceilDiv(millis, mp3FrameMillis)
	b := make([]byte, frames*mp3FrameBytes)
	for i := int64(0); i < frames; i++ {
		copy(b[i*mp3FrameBytes:], mp3Header[:])
	}
	return b
}

func pcmBytes(millis int64) int64 { return ceilDiv(millis*pcmRate, 1000) * 2 }

func silentWAV(millis int64) []byte {
	data := pcmBytes(millis)
	b := make([]byte, 44+data)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+data))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)        // fmt chunk size
	binary.LittleEndian.PutUint16(b[20:], 1)         // PCM
	binary.LittleEndian.PutUint16(b[22:], 1)         // mono
	binary.LittleEndian.PutUint32(b[24:], pcmRate)   // sample rate
	binary.LittleEndian.PutUint32(b[28:], pcmRate*2) // byte rate
	binary.LittleEndian.PutUint16(b[32:], 2)         // block align
	binary.LittleEndian.PutUint16(b[34:], 16)        // bits per sample
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(data))
	return b
}
