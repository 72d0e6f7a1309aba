package dataset

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
)

// This file reads the little of an image's header that decoding needs
// besides the pixels: the EXIF orientation of JPEG (APP1 "Exif") and PNG
// (eXIf) files. Every parser here reads only within the slice it is given
// and returns a harmless default on anything malformed (FuzzOrientation
// checks it never panics).

// Orientation returns the EXIF orientation tag (0x0112) of a JPEG or PNG
// encoding, 1 to 8, or 1 (as stored) when there is none or it is invalid.
//
//	1 as stored     2 mirrored left–right   3 rotated 180°   4 mirrored top–bottom
//	5 transposed    6 needs 90° clockwise   7 transversed    8 needs 90° anticlockwise
func Orientation(data []byte) int {
	o := 1
	switch {
	case bytes.HasPrefix(data, []byte("\xff\xd8")):
		jpegSegments(data, func(marker byte, payload []byte) bool {
			if marker == 0xE1 && bytes.HasPrefix(payload, []byte("Exif\x00\x00")) {
				o = tiffOrientation(payload[6:])
				return false
			}
			return true
		})
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		pngChunks(data, func(typ string, payload []byte) bool {
			if typ == "eXIf" {
				o = tiffOrientation(payload)
				return false
			}
			return typ != "IDAT"
		})
	}
	return o
}

// jpegSegments calls fn with each marker segment's marker and payload
// (after the length) up to the first start of scan, while fn returns true.
func jpegSegments(data []byte, fn func(marker byte, payload []byte) bool) {
	if len(data) < 2 || data[0] != 0xFF || data[1] != 0xD8 {
		return
	}
	for i := 2; i+2 <= len(data); {
		if data[i] != 0xFF {
			return
		}
		m := data[i+1]
		switch {
		case m == 0xFF: // fill byte
			i++
			continue
		case m == 0x01 || m >= 0xD0 && m <= 0xD8: // TEM, RSTn, SOI: no length
			i += 2
			continue
		case m == 0xD9 || m == 0xDA: // EOI, SOS
			return
		}
		if i+4 > len(data) {
			return
		}
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		if n < 2 || i+2+n > len(data) {
			return
		}
		if !fn(m, data[i+4:i+2+n]) {
			return
		}
		i += 2 + n
	}
}

// pngChunks calls fn with each chunk's type and data, in order, while fn
// returns true.
func pngChunks(data []byte, fn func(typ string, payload []byte) bool) {
	for i := 8; i+8 <= len(data); {
		n := binary.BigEndian.Uint32(data[i:])
		if uint64(n) > uint64(len(data)-i-8) {
			return
		}
		if !fn(string(data[i+4:i+8]), data[i+8:i+8+int(n)]) {
			return
		}
		i += 12 + int(n) // length, type, data, CRC
	}
}

// tiffOrientation reads the orientation tag from IFD0 of a TIFF structure
// (the body of an EXIF block); 1 when absent or invalid.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:]) != 42 {
		return 1
	}
	ifd := uint64(bo.Uint32(t[4:]))
	if ifd+2 > uint64(len(t)) {
		return 1
	}
	count := uint64(bo.Uint16(t[ifd:]))
	for k := range count {
		e := ifd + 2 + 12*k
		if e+12 > uint64(len(t)) {
			return 1
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		// type SHORT (3), one value, stored in the first two bytes of the
		// value field
		if bo.Uint16(t[e+2:]) != 3 || bo.Uint32(t[e+4:]) != 1 {
			return 1
		}
		if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
			return v
		}
		return 1
	}
	return 1
}

// Orient returns img turned upright for an EXIF orientation (see
// Orientation): mirrored and/or rotated so that it shows as a viewer that
// honours the tag shows it. Orientation 1 (or an invalid value) returns img
// itself. The result has origin (0, 0) and, for 5 to 8, width and height
// swapped. Gray, Gray16, RGBA, NRGBA, RGBA64, NRGBA64, CMYK, Alpha,
// Alpha16 and Paletted images keep their type, YCbCr becomes 4:4:4
// YCbCr, and anything else becomes NRGBA64.
func Orient(img image.Image, orientation int) image.Image {
	if orientation < 2 || orientation > 8 || img == nil {
		return img
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := w, h
	if orientation >= 5 {
		dw, dh = h, w
	}
	// src maps a destination pixel to the source pixel it shows (both
	// relative to their rectangles' corners).
	src := func(x, y int) (int, int) {
		switch orientation {
		case 2:
			return w - 1 - x, y
		case 3:
			return w - 1 - x, h - 1 - y
		case 4:
			return x, h - 1 - y
		case 5:
			return y, x
		case 6:
			return y, h - 1 - x
		case 7:
			return w - 1 - y, h - 1 - x
		default: // 8
			return w - 1 - y, x
		}
	}
	r := image.Rect(0, 0, dw, dh)
	// images stored as Pix rows of a fixed number of bytes per pixel
	var (
		pix    []uint8
		stride int
		bpp    int
		dst    image.Image
		dpix   []uint8
		dstr   int
	)
	switch m := img.(type) {
	case *image.Gray:
		d := image.NewGray(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 1, d, d.Pix, d.Stride
	case *image.Gray16:
		d := image.NewGray16(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 2, d, d.Pix, d.Stride
	case *image.RGBA:
		d := image.NewRGBA(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 4, d, d.Pix, d.Stride
	case *image.NRGBA:
		d := image.NewNRGBA(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 4, d, d.Pix, d.Stride
	case *image.RGBA64:
		d := image.NewRGBA64(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 8, d, d.Pix, d.Stride
	case *image.NRGBA64:
		d := image.NewNRGBA64(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 8, d, d.Pix, d.Stride
	case *image.CMYK:
		d := image.NewCMYK(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 4, d, d.Pix, d.Stride
	case *image.Alpha:
		d := image.NewAlpha(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 1, d, d.Pix, d.Stride
	case *image.Alpha16:
		d := image.NewAlpha16(r)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 2, d, d.Pix, d.Stride
	case *image.Paletted:
		d := image.NewPaletted(r, m.Palette)
		pix, stride, bpp, dst, dpix, dstr = m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, 1, d, d.Pix, d.Stride
	case *image.YCbCr:
		d := image.NewYCbCr(r, image.YCbCrSubsampleRatio444)
		for y := range dh {
			for x := range dw {
				sx, sy := src(x, y)
				yi, ci := m.YOffset(b.Min.X+sx, b.Min.Y+sy), m.COffset(b.Min.X+sx, b.Min.Y+sy)
				o := y*d.YStride + x
				d.Y[o], d.Cb[o], d.Cr[o] = m.Y[yi], m.Cb[ci], m.Cr[ci]
			}
		}
		return d
	default:
		d := image.NewNRGBA64(r)
		for y := range dh {
			for x := range dw {
				sx, sy := src(x, y)
				d.Set(x, y, color.NRGBA64Model.Convert(img.At(b.Min.X+sx, b.Min.Y+sy)))
			}
		}
		return d
	}
	for y := range dh {
		row := dpix[y*dstr : y*dstr+dw*bpp]
		for x := range dw {
			sx, sy := src(x, y)
			copy(row[x*bpp:(x+1)*bpp], pix[sy*stride+sx*bpp:])
		}
	}
	return dst
}
