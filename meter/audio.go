package meter

import (
	"bytes"
	"encoding/binary"
)

// audioHeadBytes is how much of an uploaded audio file audioDuration may
// look at: enough for WAV and FLAC headers and for an MP3's first frame
// behind a modest ID3 tag. Files whose header lies beyond it fall back to
// the AudioBytesPerSecond floor.
const audioHeadBytes = 256 << 10

// audioDuration reads the duration of an uploaded audio file from its
// container header, given the file's first bytes (head) and its size. It
// knows WAV (data size / the rate decoders play PCM at), FLAC (STREAMINFO
// total samples) and MP3 (Xing/Info or VBRI frame count, else the first
// frame's bitrate, as in a constant-bitrate file). ok is false for
// anything else, and the caller falls back to the bitrate floor.
//
// least is a lower bound on the duration that does not trust the header's
// duration fields, which decoders ignore and a client can forge: the
// file's bytes at the format's highest bitrate (448 kbit/s for MPEG
// audio, 9/8 of the PCM rate STREAMINFO states for FLAC), or 0.
func audioDuration(head []byte, size int64) (millis, least int64, ok bool) {
	switch {
	case len(head) >= 12 && string(head[:4]) == "RIFF" && string(head[8:12]) == "WAVE":
		ms, ok := wavDuration(head, size)
		return ms, 0, ok
	case len(head) >= 4 && string(head[:4]) == "fLaC":
		return flacDuration(head, size)
	case len(head) >= 8 && (string(head[:4]) == "OggS" || string(head[4:8]) == "ftyp" ||
		string(head[:4]) == "\x1a\x45\xdf\xa3"):
		return 0, 0, false // Ogg, MP4/M4A, WebM/Matroska: not read; the floor applies
	}
	return mp3Duration(head, size)
}

// pcmFormats are the WAVE format tags whose samples decoders play at
// sample rate × block align, ignoring the header's byte rate: PCM, IEEE
// float, A-law, µ-law and WAVE_FORMAT_EXTENSIBLE.
var pcmFormats = map[uint16]bool{1: true, 3: true, 6: true, 7: true, 0xFFFE: true}

func wavDuration(head []byte, size int64) (int64, bool) {
	var byteRate int64
	for i := 12; i+8 <= len(head); {
		id := string(head[i : i+4])
		n := int64(binary.LittleEndian.Uint32(head[i+4 : i+8]))
		body := i + 8
		switch id {
		case "fmt ":
			if body+12 > len(head) {
				return 0, false
			}
			byteRate = int64(binary.LittleEndian.Uint32(head[body+8 : body+12]))
			if body+14 <= len(head) && pcmFormats[binary.LittleEndian.Uint16(head[body:body+2])] {
				// The byte rate is informative only: a header claiming
				// 1,000× the real one must not make 60 s cost 60 ms.
				sampleRate := int64(binary.LittleEndian.Uint32(head[body+4 : body+8]))
				blockAlign := int64(binary.LittleEndian.Uint16(head[body+12 : body+14]))
				if sampleRate > 0 && blockAlign > 0 {
					byteRate = sampleRate * blockAlign
				}
			}
		case "data":
			if byteRate <= 0 {
				return 0, false
			}
			// A streamed WAV may say 0 or 0xFFFFFFFF; a truncated one more
			// than it holds. The bytes actually sent bound it.
			if rest := size - int64(body); n == 0 || n > rest {
				n = max(rest, 0)
			}
			return ceilDiv(n*1000, byteRate), true
		}
		if n > int64(len(head)) {
			return 0, false
		}
		i = body + int(n) + int(n&1) // chunks are word-aligned
	}
	return 0, false
}

func flacDuration(head []byte, size int64) (millis, least int64, ok bool) {
	// "fLaC", then the STREAMINFO block: a 4-byte block header, 10 bytes of
	// block and frame sizes, then 20 bits of sample rate, 3 of channels,
	// 5 of bits per sample and 36 of total samples.
	if len(head) < 4+4+18 || head[4]&0x7f != 0 {
		return 0, 0, false
	}
	b := head[8+10 : 8+18]
	v := binary.BigEndian.Uint64(b)
	rate := int64(v >> 44)
	channels := int64(v>>41&7) + 1
	bits := int64(v>>36&31) + 1
	samples := int64(v & (1<<36 - 1))
	if rate == 0 {
		return 0, 0, false
	}
	// Decoders decode every frame whatever the total says, and FLAC never
	// takes more than a little over the PCM it encodes: bound the duration
	// by the bytes after the metadata blocks (cover art can be large) at
	// 9/8 of the PCM rate. If the last block header lies beyond head, no
	// bound.
	for i := 4; i+4 <= len(head); {
		end := i + 4 + (int(head[i+1])<<16 | int(head[i+2])<<8 | int(head[i+3]))
		if head[i]&0x80 != 0 { // the last metadata block
			least = ceilDiv(max(size-int64(end), 0)*1000*8*8, rate*channels*bits*9)
			break
		}
		i = end
	}
	if samples == 0 {
		return 0, least, false
	}
	return ceilDiv(samples*1000, rate), least, true
}

// mp3MaxKbps is the highest bitrate of any MPEG audio frame (MPEG-1
// Layer I), so a stream of B bytes lasts at least B × 8 / 448 ms.
const mp3MaxKbps = 448

var (
	mp3Bitrates = [2][3][16]int64{ // [MPEG-1, MPEG-2/2.5][layer I, II, III] kbit/s
		{
			{0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448},
			{0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384},
			{0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320},
		},
		{
			{0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256},
			{0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160},
			{0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160},
		},
	}
	mp3Rates = [3][3]int64{{44100, 48000, 32000}, {22050, 24000, 16000}, {11025, 12000, 8000}}
)

func mp3Duration(head []byte, size int64) (millis, least int64, ok bool) {
	start := 0
	if len(head) >= 10 && string(head[:3]) == "ID3" {
		// ID3v2: a 10-byte header whose size is 4 syncsafe 7-bit bytes,
		// plus a 10-byte footer when flag 0x10 is set.
		tag := int(head[6]&0x7f)<<21 | int(head[7]&0x7f)<<14 | int(head[8]&0x7f)<<7 | int(head[9]&0x7f)
		start = 10 + tag
		if head[5]&0x10 != 0 {
			start += 10
		}
	}
	// The first frame within a few KiB of the expected start.
	for i := start; i+4 <= len(head) && i < start+4096; i++ {
		if head[i] != 0xff || head[i+1]&0xe0 != 0xe0 {
			continue
		}
		h := binary.BigEndian.Uint32(head[i : i+4])
		version := (h >> 19) & 3 // 0: MPEG-2.5, 2: MPEG-2, 3: MPEG-1
		layer := (h >> 17) & 3   // 1: III, 2: II, 3: I
		bri := (h >> 12) & 15
		sri := (h >> 10) & 3
		if version == 1 || layer == 0 || bri == 0 || bri == 15 || sri == 3 {
			continue
		}
		v := 1
		vr := 1 // row of mp3Rates
		switch version {
		case 3:
			v, vr = 0, 0
		case 0:
			vr = 2
		}
		l := 3 - int(layer) // 0: I, 1: II, 2: III
		kbps := mp3Bitrates[v][l][bri]
		rate := mp3Rates[vr][sri]
		spf := int64(1152)
		switch {
		case l == 0:
			spf = 384
		case l == 2 && v == 1:
			spf = 576
		}
		// A frame sync is only 11 bits: insist that the next frame
		// starts where this one's length says, with the same format.
		pad := int64((h >> 9) & 1)
		var frameLen int64
		switch l {
		case 0:
			frameLen = (12000*kbps/rate + pad) * 4
		case 2:
			if v == 1 {
				frameLen = 72000*kbps/rate + pad
				break
			}
			fallthrough
		default:
			frameLen = 144000*kbps/rate + pad
		}
		next := i + int(frameLen)
		if frameLen < 4 || next+4 > len(head) ||
			binary.BigEndian.Uint32(head[next:next+4])&0xfffe0c00 != h&0xfffe0c00 {
			continue
		}
		mono := (h>>6)&3 == 3
		side := 32 // Xing/Info sits after the side information
		switch {
		case v == 0 && mono:
			side = 17
		case v == 1 && !mono:
			side = 17
		case v == 1 && mono:
			side = 9
		}
		// The Xing/VBRI frame count is a claim decoders do not need;
		// the frames are what they play.
		least = ceilDiv((size-int64(i))*8, mp3MaxKbps)
		if frames, ok := mp3Frames(head, i, i+4+side); ok {
			return ceilDiv(frames*spf*1000, rate), least, true
		}
		// No VBR header: a constant-bitrate file, kbit/s = bits per ms.
		return ceilDiv((size-int64(i))*8, kbps), least, true
	}
	return 0, 0, false
}

// mp3Frames reads the frame count from a Xing/Info header at off or a
// VBRI header 32 bytes after the frame header at frame.
func mp3Frames(head []byte, frame, off int) (int64, bool) {
	if off+12 <= len(head) {
		tag := head[off : off+4]
		if bytes.Equal(tag, []byte("Xing")) || bytes.Equal(tag, []byte("Info")) {
			flags := binary.BigEndian.Uint32(head[off+4 : off+8])
			if flags&1 != 0 {
				if n := int64(binary.BigEndian.Uint32(head[off+8 : off+12])); n > 0 {
					return n, true
				}
			}
		}
	}
	if v := frame + 4 + 32; v+18 <= len(head) && string(head[v:v+4]) == "VBRI" {
		if n := int64(binary.BigEndian.Uint32(head[v+14 : v+18])); n > 0 {
			return n, true
		}
	}
	return 0, false
}
