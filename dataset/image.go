package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // register decoders for image.Decode
	_ "image/jpeg"
	_ "image/png"
	"io"

	"github.com/tinct/tinct/internal/lanczos"
	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/webp"
)

const (
	// MinImageSide is the smallest width or height Prepare accepts; smaller
	// images are skipped.
	MinImageSide = 32

	// MaxImagePixels bounds the decoded size of one image (width·height), so
	// a corrupt or hostile header cannot make a decoder allocate gigabytes.
	MaxImagePixels = 1 << 27

	// maxEncodedBytes bounds how much Decode reads from its reader.
	maxEncodedBytes = 1 << 30
)

// errTooLarge marks images whose header declares more than MaxImagePixels.
var errTooLarge = errors.New("image too large")

// Decode decodes a JPEG, PNG, GIF, BMP or WebP image. It checks the declared
// dimensions before decoding the pixels, refusing images larger than
// MaxImagePixels, and turns a decoder panic on malformed data into an error.
// A JPEG or PNG with an EXIF orientation (a phone's portrait photo stored
// sideways) is turned upright (Orientation, Orient).
func Decode(r io.Reader) (image.Image, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxEncodedBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	if len(data) > maxEncodedBytes {
		return nil, fmt.Errorf("%w: encoded image exceeds %d MiB", errTooLarge, maxEncodedBytes>>20)
	}
	return decodeBytes(data)
}

// decodeBytes is Decode on an in-memory encoding.
func decodeBytes(data []byte) (img image.Image, err error) {
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, fmt.Errorf("decode image: decoder failed on malformed data: %v", p)
		}
	}()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode image header: %w (is it a JPEG, PNG, GIF, BMP or WebP file?)", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("decode %s: empty image (%dx%d)", format, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxImagePixels {
		return nil, fmt.Errorf("%w: %s of %dx%d exceeds %d pixels", errTooLarge, format, cfg.Width, cfg.Height, MaxImagePixels)
	}
	img, _, err = image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", format, err)
	}
	if format == "jpeg" || format == "png" {
		img = Orient(img, Orientation(data))
	}
	return img, nil
}

// luma is ITU-R BT.601 luma on 8-bit RGB exactly as Pillow's convert("L")
// computes it (libImaging/Convert.c, rgb2l): 16-bit fixed-point weights
// 19595, 38470 and 7471 (0.299, 0.587, 0.114 times 65536, summing to 65536)
// with rounding to nearest. It differs from round(0.299R + 0.587G + 0.114B)
// by one level on about 0.05% of all colors, where the exact value lies
// within 1e-4 of a half.
func luma(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}

// ToGray converts img to 8-bit gray with BT.601 luma computed as Pillow's
// convert("L") does, after taking the image's straight (non-premultiplied)
// 8-bit RGB, as Pillow's convert("RGB") would. A gray image is copied as is.
// The result has img's bounds; a nil image gives an empty result.
func ToGray(img image.Image) *image.Gray {
	if img == nil {
		return image.NewGray(image.Rectangle{})
	}
	b := img.Bounds()
	dst := image.NewGray(b)
	if g, ok := img.(*image.Gray); ok {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			copy(dst.Pix[dst.PixOffset(b.Min.X, y):dst.PixOffset(b.Max.X, y)], g.Pix[g.PixOffset(b.Min.X, y):])
		}
		return dst
	}
	row := make([]float32, 3*b.Dx())
	read := rgbRows(img, b)
	for y := 0; y < b.Dy(); y++ {
		read(y, row)
		out := dst.Pix[y*dst.Stride : y*dst.Stride+b.Dx()]
		for x := range out {
			out[x] = luma(uint8(row[3*x]), uint8(row[3*x+1]), uint8(row[3*x+2]))
		}
	}
	return dst
}

// Resize center-crops img to a square (the largest one, centered, the
// offset rounded down) and resizes it to size×size with a separable Lanczos
// filter (a = 3), antialiased when shrinking, the way Pillow's
// resize(LANCZOS) works: the kernel is stretched by the scale factor when
// downscaling and, at the borders, truncated and renormalized so that the
// weights always sum to one. Arithmetic is in float32 and the result is
// rounded to the nearest level and clamped to [0, 255] once, at the end, so
// values may differ from Pillow's fixed-point, 8-bit-intermediate output by
// a level or so.
//
// The result is opaque with origin (0, 0). A size below 1 gives an empty
// image; an empty or nil img gives a black one.
func Resize(img image.Image, size int) *image.RGBA {
	if size < 1 {
		return image.NewRGBA(image.Rectangle{})
	}
	dst := image.NewRGBA(image.Rect(0, 0, size, size))
	rgb := resizeRGB(img, size)
	for i := 0; i < size*size; i++ {
		p := dst.Pix[4*i : 4*i+4]
		if rgb != nil {
			p[0], p[1], p[2] = rgb[3*i], rgb[3*i+1], rgb[3*i+2]
		}
		p[3] = 255
	}
	return dst
}

// centerSquare returns the largest square inside r, centered, offsets rounded
// down.
func centerSquare(r image.Rectangle) image.Rectangle {
	side := min(r.Dx(), r.Dy())
	x0 := r.Min.X + (r.Dx()-side)/2
	y0 := r.Min.Y + (r.Dy()-side)/2
	return image.Rect(x0, y0, x0+side, y0+side)
}

// cropSquares returns n squares of the short side of r, evenly spaced
// along its long side from one end to the other (offsets rounded down); n
// of 1 or less gives the center square alone.
func cropSquares(r image.Rectangle, n int) []image.Rectangle {
	if n <= 1 {
		return []image.Rectangle{centerSquare(r)}
	}
	side := min(r.Dx(), r.Dy())
	out := make([]image.Rectangle, n)
	for i := range out {
		x0, y0 := r.Min.X, r.Min.Y
		if r.Dx() > side {
			x0 += i * (r.Dx() - side) / (n - 1)
		} else {
			y0 += i * (r.Dy() - side) / (n - 1)
		}
		out[i] = image.Rect(x0, y0, x0+side, y0+side)
	}
	return out
}

// resizeRGB center-crops and resizes img to size×size, returning
// interleaved 8-bit RGB (HWC), or nil when img is nil or empty.
func resizeRGB(img image.Image, size int) []uint8 {
	if img == nil || img.Bounds().Empty() || size < 1 {
		return nil
	}
	return resizeRGBSquare(img, centerSquare(img.Bounds()), size)
}

// resizeRGBSquare resizes the square sq of img to size×size.
func resizeRGBSquare(img image.Image, sq image.Rectangle, size int) []uint8 {
	return toUint8(resample(sq.Dx(), size, 3, rgbRows(img, sq)))
}

// resizeGraySquare resizes the square sq of a gray image to size×size.
func resizeGraySquare(img image.Image, sq image.Rectangle, size int) []uint8 {
	return toUint8(resample(sq.Dx(), size, 1, grayRows(img, sq)))
}

// toUint8 rounds to the nearest integer and clamps to [0, 255].
func toUint8(v []float32) []uint8 {
	out := make([]uint8, len(v))
	for i, x := range v {
		switch {
		case x <= 0:
			out[i] = 0
		case x >= 255:
			out[i] = 255
		default:
			out[i] = uint8(x + 0.5)
		}
	}
	return out
}

// rowFunc writes row y (counted from the top of its rectangle) into dst as
// interleaved channel values in [0, 255].
type rowFunc func(y int, dst []float32)

// rgbRows reads the straight 8-bit RGB of the pixels of img inside r, with
// fast paths for the types the standard decoders return.
func rgbRows(img image.Image, r image.Rectangle) rowFunc {
	w := r.Dx()
	switch m := img.(type) {
	case *image.YCbCr:
		return func(y int, dst []float32) {
			py := r.Min.Y + y
			for x := 0; x < w; x++ {
				px := r.Min.X + x
				yi, ci := m.YOffset(px, py), m.COffset(px, py)
				cr, cg, cb := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(cr), float32(cg), float32(cb)
			}
		}
	case *image.NRGBA:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			for x := 0; x < w; x++ {
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(p[4*x]), float32(p[4*x+1]), float32(p[4*x+2])
			}
		}
	case *image.RGBA:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			for x := 0; x < w; x++ {
				q := p[4*x : 4*x+4]
				if q[3] != 255 && q[3] != 0 {
					c := color.NRGBAModel.Convert(color.RGBA{q[0], q[1], q[2], q[3]}).(color.NRGBA)
					dst[3*x], dst[3*x+1], dst[3*x+2] = float32(c.R), float32(c.G), float32(c.B)
					continue
				}
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(q[0]), float32(q[1]), float32(q[2])
			}
		}
	case *image.Gray:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			for x := 0; x < w; x++ {
				v := float32(p[x])
				dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
			}
		}
	default:
		return func(y int, dst []float32) {
			for x := 0; x < w; x++ {
				c := color.NRGBAModel.Convert(img.At(r.Min.X+x, r.Min.Y+y)).(color.NRGBA)
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(c.R), float32(c.G), float32(c.B)
			}
		}
	}
}

// grayRows reads 8-bit gray values of the pixels of img inside r: the values
// themselves for gray images, luma of the straight RGB otherwise.
func grayRows(img image.Image, r image.Rectangle) rowFunc {
	w := r.Dx()
	switch m := img.(type) {
	case *image.Gray:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			for x := 0; x < w; x++ {
				dst[x] = float32(p[x])
			}
		}
	case *image.Gray16:
		return func(y int, dst []float32) {
			for x := 0; x < w; x++ {
				dst[x] = float32(m.Gray16At(r.Min.X+x, r.Min.Y+y).Y >> 8)
			}
		}
	default:
		rgb := rgbRows(img, r)
		buf := make([]float32, 3*w)
		return func(y int, dst []float32) {
			rgb(y, buf)
			for x := 0; x < w; x++ {
				dst[x] = float32(luma(uint8(buf[3*x]), uint8(buf[3*x+1]), uint8(buf[3*x+2])))
			}
		}
	}
}

// resample resizes a side×side image with nc interleaved channels, read
// row by row through row, to size×size: a horizontal pass into a
// side×size buffer, then a vertical pass. Passes whose size does not change
// are skipped. It returns size·size·nc values.
func resample(side, size, nc int, row rowFunc) []float32 {
	src := make([]float32, side*nc)
	rowLen := size * nc
	tmp := make([]float32, side*rowLen)
	if side == size {
		for y := 0; y < side; y++ {
			row(y, tmp[y*rowLen:(y+1)*rowLen])
		}
		return tmp
	}
	fw := lanczos.Weights(side, size)
	for y := 0; y < side; y++ {
		row(y, src)
		dst := tmp[y*rowLen : (y+1)*rowLen]
		for o := 0; o < size; o++ {
			ws := fw.W[fw.Off[o]:fw.Off[o+1]]
			s := src[fw.Lo[o]*nc:]
			if nc == 3 { // RGB: one sweep over the taps
				var r, g, b float32
				for k, w := range ws {
					p := s[3*k : 3*k+3]
					r += w * p[0]
					g += w * p[1]
					b += w * p[2]
				}
				dst[3*o], dst[3*o+1], dst[3*o+2] = r, g, b
				continue
			}
			for c := 0; c < nc; c++ {
				var acc float32
				for k, w := range ws {
					acc += w * s[k*nc+c]
				}
				dst[o*nc+c] = acc
			}
		}
	}
	out := make([]float32, size*rowLen)
	for o := 0; o < size; o++ {
		dst := out[o*rowLen : (o+1)*rowLen]
		for k, w := range fw.W[fw.Off[o]:fw.Off[o+1]] {
			s := tmp[(fw.Lo[o]+k)*rowLen : (fw.Lo[o]+k+1)*rowLen]
			for i := range dst {
				dst[i] += w * s[i]
			}
		}
	}
	return out
}
