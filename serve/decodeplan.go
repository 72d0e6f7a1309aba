package serve

import (
	"encoding/binary"
	"image"
	"image/color"
	"math"
	"slices"

	"github.com/tinct/tinct/dataset"
)

// decodePlan is what turning an upload into the network's input takes,
// read from its header before any pixel is decoded: the memory of each
// stage, and so the peak that the memory budget reserves.
//
// The stages (photoInput): the decoder makes the image (decoder: the
// image and what the decoder keeps besides it, see decoderBytes); the
// image is converted to its BT.601 gray (image + gray + a row of
// float32 RGB) and dropped; then (rest: the reservation shrinks to it, and
// the dropped image goes back to the operating system before anyone else
// is granted its bytes) the gray is turned upright by its EXIF orientation
// (two grays), and chroma.Fit makes the network's input (the gray, a
// float32 plane of the photo's height × the input's width, and the input).
// An 8-bit gray image is its own gray (no copy).
type decodePlan struct {
	format        string // "png" or "jpeg"
	width, height int    // as stored (before the orientation)
	orientation   int
	decoder       int64   // the decoder's peak
	image         int64   // the decoded image alone
	bpp           float64 // decoder / pixels, for messages
	grayCopy      bool    // the gray is a copy of the image
	peak          int64   // the most the stages hold at once
	rest          int64   // the most the stages after the decoded image's drop hold
	lum           int64   // what stays: the gray at the photo's size
}

// planSlack covers what the stages allocate besides their planes (filter
// weights, the decoder's state, the input's PNG): a mebibyte.
const planSlack = 1 << 20

// planDecode plans the decoding of a PNG or JPEG whose header (cfg,
// format) was read from data, for a network input of size² pixels.
func planDecode(cfg image.Config, format string, data []byte, size int) decodePlan {
	w, h := int64(cfg.Width), int64(cfg.Height)
	px := w * h
	p := decodePlan{format: format, width: cfg.Width, height: cfg.Height, orientation: dataset.Orientation(data)}
	p.decoder, p.image = decoderBytes(cfg, format, data)
	p.bpp = float64(p.decoder) / float64(max(px, 1))
	p.grayCopy = cfg.ColorModel != color.GrayModel
	p.lum = px
	first := p.decoder
	if p.grayCopy {
		first = max(first, p.image+px+12*w) // ToGray: image, gray, a row of float32 RGB
	}
	var rest []int64
	if p.orientation >= 2 && p.orientation <= 8 {
		rest = append(rest, 2*px)
	}
	// chroma.Fit of the upright photo (W × H) into size²: its resizer
	// keeps a float32 plane of H × the frame's width
	uw, uh := w, h
	if p.orientation >= 5 && p.orientation <= 8 {
		uw, uh = h, w
	}
	s := int64(max(size, 1))
	cw, ch := s, s
	if uw >= uh {
		ch = max(1, min(s, int64(math.Round(float64(uh)*float64(s)/float64(uw)))))
	} else {
		cw = max(1, min(s, int64(math.Round(float64(uw)*float64(s)/float64(uh)))))
	}
	rest = append(rest, px+4*uh*cw+4*cw*ch+s*s+4*uw)
	p.rest = slices.Max(rest) + planSlack
	p.peak = max(first+planSlack, p.rest)
	return p
}

// decoderBytes returns the memory image/png or image/jpeg takes to decode
// an image, at its peak, and the decoded image's own bytes:
//
//   - PNG: the image (1 byte per pixel for gray and paletted, 2 for 16-bit
//     gray, 4 for 8-bit RGB(A) and gray with alpha, 8 for 16-bit colour),
//     two rows of the raw data; an interlaced one also every pass's image
//     (together the image's size again).
//   - JPEG: the component planes at the MCU-padded size (1 byte per pixel
//     for gray, up to 3 for YCbCr by the chroma subsampling, 4 with CMYK's
//     black); a progressive one besides keeps every DCT coefficient (4 bytes
//     per sample); an RGB-coded (Adobe) or CMYK one is converted into a new
//     4-byte-per-pixel image at the end.
func decoderBytes(cfg image.Config, format string, data []byte) (peak, img int64) {
	w, h := int64(cfg.Width), int64(cfg.Height)
	switch format {
	case "png":
		img = w * h * int64(modelBytes(cfg.ColorModel))
		peak = img
		if len(data) > 28 {
			channels := map[byte]int64{0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[data[25]]
			bits := max(channels, 1) * max(int64(data[24]), 1)
			peak += 2 * (1 + (bits*w+7)/8)
			if data[28] == 1 { // Adam7
				peak += img
			}
		}
	case "jpeg":
		f, ok := jpegFrame(data)
		if !ok {
			img = w * h * int64(modelBytes(cfg.ColorModel))
			return 3 * img, img // not reached for a header DecodeConfig read
		}
		h0, v0 := int64(f.h[0]), int64(f.v[0])
		if f.n == 1 {
			h0, v0 = 1, 1
		}
		mxx, myy := (w+8*h0-1)/(8*h0), (h+8*v0-1)/(8*v0)
		var planes int64
		for i := range f.n {
			hi, vi := int64(f.h[i]), int64(f.v[i])
			if f.n == 1 {
				hi, vi = 1, 1
			}
			planes += mxx * myy * hi * vi * 64
		}
		peak, img = planes, planes
		if f.progressive {
			peak += 4 * planes
		}
		if f.n == 4 || f.n == 3 && cfg.ColorModel == color.RGBAModel {
			img = 4 * w * h
			peak += img
		}
	default:
		img = w * h * int64(modelBytes(cfg.ColorModel))
		peak = img
	}
	return peak, img
}

// modelBytes is the bytes per pixel of the image a decoder makes for a
// colour model.
func modelBytes(m color.Model) int {
	switch m {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		return 4
	case color.YCbCrModel:
		return 3
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8 // RGBA64, NRGBA64 and anything unknown
}

// jpegSOF is a JPEG's start of frame: its components' sampling factors.
type jpegSOF struct {
	n           int
	h, v        [4]int
	progressive bool
}

// jpegFrame reads the first start-of-frame segment of a JPEG; ok is false
// when there is none (or it is malformed) before the first scan.
func jpegFrame(data []byte) (f jpegSOF, ok bool) {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return f, false
	}
	for i := 2; i+4 <= len(data); {
		if data[i] != 0xFF {
			return f, false
		}
		m := data[i+1]
		switch {
		case m == 0xFF:
			i++
			continue
		case m == 0x01 || m >= 0xD0 && m <= 0xD8:
			i += 2
			continue
		case m == 0xD9 || m == 0xDA:
			return f, false
		}
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		if n < 2 || i+2+n > len(data) {
			return f, false
		}
		seg := data[i+4 : i+2+n]
		switch m {
		case 0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF:
			if len(seg) < 6 {
				return f, false
			}
			f.n = int(seg[5])
			if f.n < 1 || f.n > 4 || len(seg) < 6+3*f.n {
				return f, false
			}
			for c := range f.n {
				hv := seg[6+3*c+1]
				f.h[c], f.v[c] = max(int(hv>>4), 1), max(int(hv&15), 1)
			}
			f.progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE
			return f, true
		}
		i += 2 + n
	}
	return f, false
}
