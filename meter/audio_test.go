package meter

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func wavFile(rate, channels, bits int, seconds float64) []byte {
	byteRate := rate * channels * bits / 8
	data := int(float64(byteRate) * seconds)
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+data))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(channels), uint32(rate), uint32(byteRate), uint16(channels * bits / 8), uint16(bits)} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(data))
	b.Write(make([]byte, data))
	return b.Bytes()
}

func flacFile(rate int, samples uint64) []byte {
	b := []byte("fLaC")
	b = append(b, 0x80, 0, 0, 34) // last block, STREAMINFO, 34 bytes
	b = append(b, make([]byte, 10)...)
	v := uint64(rate)<<44 | 1<<41 | 15<<36 | samples // stereo, 16-bit
	b = binary.BigEndian.AppendUint64(b, v)
	return append(b, make([]byte, 16+1000)...)
}

// mp3File builds MPEG-1 Layer III frames at 128 kbit/s, 44.1 kHz
// (417 bytes each), with a Xing or VBRI header in the first if asked.
func mp3File(frames int, vbrTag string) []byte {
	hdr := []byte{0xff, 0xfb, 0x90, 0x00}
	frame := func() []byte { return append(bytes.Clone(hdr), make([]byte, 413)...) }
	first := frame()
	switch vbrTag {
	case "Xing", "Info":
		copy(first[36:], vbrTag)
		binary.BigEndian.PutUint32(first[40:], 1)
		binary.BigEndian.PutUint32(first[44:], uint32(frames))
	case "VBRI":
		copy(first[36:], "VBRI")
		binary.BigEndian.PutUint32(first[50:], uint32(frames))
	}
	out := append([]byte("ID3\x04\x00\x00\x00\x00\x00\x0a"), make([]byte, 10)...)
	out = append(out, first...)
	for i := 1; i < frames; i++ {
		out = append(out, frame()...)
	}
	return out
}

func TestAudioDuration(t *testing.T) {
	random := make([]byte, 50_000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	cbr := mp3File(1000, "")
	tests := []struct {
		name string
		file []byte
		want int64
		ok   bool
	}{
		{"wav 16k mono", wavFile(16000, 1, 16, 5), 5000, true},
		{"wav 44.1k stereo", wavFile(44100, 2, 16, 2.5), 2500, true},
		{"flac", flacFile(44100, 44100*90), 90_000, true},
		// 325 frames × 1152 samples / 44,100 Hz = 8.4898 s → 8,490 ms.
		{"mp3 xing", mp3File(325, "Xing"), 8490, true},
		{"mp3 info", mp3File(325, "Info"), 8490, true},
		{"mp3 vbri", mp3File(325, "VBRI"), 8490, true},
		// CBR: (size − 20) × 8 bits / 128 kbit/s = 417,000 × 8 / 128 = 26,063 ms.
		{"mp3 cbr", cbr, int64((len(cbr)-20)*8+127) / 128, true},
		{"ogg not read", append([]byte("OggS"), random...), 0, false},
		{"m4a not read", append([]byte("\x00\x00\x00\x20ftypM4A "), random...), 0, false},
		{"random bytes", random, 0, false},
		{"empty", nil, 0, false},
		{"truncated wav", wavFile(16000, 1, 16, 5)[:30], 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			head := tc.file[:min(len(tc.file), audioHeadBytes)]
			got, least, ok := audioDuration(head, int64(len(tc.file)))
			if got != tc.want || ok != tc.ok {
				t.Errorf("audioDuration = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
			// The header-free bound never exceeds an honest file's duration.
			if ok && least > got {
				t.Errorf("least = %d ms, more than the file's %d ms", least, got)
			}
		})
	}
}

// TestAudioRequestDuration checks the request side end to end: the header
// sets the reservation, and a doctored header cannot make the charge
// smaller than the file's size allows.
func TestAudioRequestDuration(t *testing.T) {
	ct := "multipart/form-data; boundary=" + testBoundary
	wav := wavFile(16000, 1, 16, 60)
	r := mustParse(t, OpenAIAudio, ct, form(t, map[string]string{"model": "whisper-1"}, map[string][]byte{"file": wav}))
	if r.AudioMillis != 60_000 {
		t.Errorf("wav: AudioMillis = %d, want 60,000", r.AudioMillis)
	}
	// A WAV whose header claims a byte rate 1,000× too high: decoders play
	// PCM at sample rate × block align and ignore the byte rate, so the
	// provider hears 60 s, and so does tollgate.
	lying := bytes.Clone(wav)
	binary.LittleEndian.PutUint32(lying[28:], 32_000_000)
	r = mustParse(t, OpenAIAudio, ct, form(t, map[string]string{"model": "whisper-1", "response_format": "text"}, map[string][]byte{"file": lying}))
	if r.AudioMillis != 60_000 {
		t.Fatalf("wav with a lying byte rate: AudioMillis = %d, want 60,000", r.AudioMillis)
	}

	// Duration fields a decoder does not use cannot shrink the charge
	// below what the file's bytes allow at the format's highest bitrate:
	// 448 kbit/s for MPEG audio, the PCM rate (+1/8) for FLAC.
	mp3 := mp3File(3000, "Xing")               // 3,000 frames × 1,152 / 44,100 Hz = 78.4 s
	binary.BigEndian.PutUint32(mp3[20+44:], 1) // the Xing header claims one frame
	flac := append(flacFile(16000, 1), make([]byte, 1_000_000)...)
	// 2 MB of cover art before 5 s of audio: the art is not audio.
	art := flacFile(16000, 16000*5)
	art[4] = 0 // STREAMINFO is no longer the last block
	picture := append([]byte{0x86, 0x1e, 0x84, 0x80}, make([]byte, 2_000_000)...)
	art = append(art[:4+4+34:4+4+34], append(picture, art[4+4+34:]...)...)
	if ms, least, ok := audioDuration(art[:audioHeadBytes], int64(len(art))); ms != 5000 || least > 5000 || !ok {
		t.Errorf("flac with cover art: %d ms, least %d, %v; want 5,000 and no more", ms, least, ok)
	}
	for _, tc := range []struct {
		name  string
		file  []byte
		least int64
	}{
		{"mp3 with a lying Xing frame count", mp3, ceilDiv(int64(len(mp3)-20)*8, 448)},
		// 16 kHz stereo 16-bit PCM is 64,000 B/s; FLAC never needs more than 9/8 of it.
		{"flac with a lying sample count", flac, ceilDiv(int64(len(flac)-42)*1000*8, 64_000*9)}, // 42 bytes of "fLaC" and STREAMINFO
	} {
		r := mustParse(t, OpenAIAudio, ct, form(t, map[string]string{"model": "whisper-1", "response_format": "text"}, map[string][]byte{"file": tc.file}))
		tap := NewTap(r, "text/plain")
		tap.Feed([]byte("hello"))
		_, u := tap.End()
		if u.AudioMillis < tc.least || !u.Estimated {
			t.Errorf("%s: charged for %d ms, want at least %d ms", tc.name, u.AudioMillis, tc.least)
		}
		// A route pricing the model by the token charges the estimated
		// audio tokens of that same bounded duration.
		if want := ceilDiv(tc.least*AudioTokensPerMinute, 60_000); u.InputTokens < want {
			t.Errorf("%s: %d input tokens estimated, want at least %d audio tokens", tc.name, u.InputTokens, want)
		}
	}
}
