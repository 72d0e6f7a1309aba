// Package chroma puts a colorization made at the network's small size onto
// a photograph's own, full-resolution luminance.
//
// The network works on a size×size gray square (128², or 64² for the sample
// model). [Fit] makes that square from a whole photo of any shape and size:
// the frame is resized (Lanczos, a = 3) so that its longer side is size and
// centred, and the rest of the square is filled by mirroring the frame, so
// that nothing is cropped. [Transfer] then takes the colorization's
// chroma — Cb and Cr of JFIF's full-range YCbCr (ITU-R BT.601) — inside the
// frame's rectangle, upsamples it with the same Lanczos filter to the
// photo's size, and combines it with the photo's own luminance Y. Where
// Y + chroma would leave the RGB cube, the chroma of that pixel is scaled
// down (towards gray) rather than the channels clipped, so the result's
// BT.601 luminance is the photo's to within rounding (one level).
//
// The same Transfer gives "colour on the photo's own luminance" at the
// model's size (eval, sample grids): pass the ground truth's gray as lum and
// the whole sample as content.
package chroma

import (
	"image"
	"image/color"
	"math"

	"github.com/tinct/tinct/internal/lanczos"
)

// Fit returns the network's input for a gray photo: a size×size image
// holding the whole photo resized (Lanczos, a = 3, antialiased when
// shrinking) so that its longer side is size, centred, with the rest filled
// by mirroring the photo at its edges, and the rectangle the photo occupies
// in it (what Transfer takes the colour from). An empty photo or a size
// below 1 gives an empty result.
func Fit(gray *image.Gray, size int) (*image.Gray, image.Rectangle) {
	if gray == nil || gray.Bounds().Empty() || size < 1 {
		return image.NewGray(image.Rectangle{}), image.Rectangle{}
	}
	b := gray.Bounds()
	w, h := b.Dx(), b.Dy()
	cw, ch := size, size
	if w >= h {
		ch = max(1, min(size, int(math.Round(float64(h)*float64(size)/float64(w)))))
	} else {
		cw = max(1, min(size, int(math.Round(float64(w)*float64(size)/float64(h)))))
	}
	content := image.Rect((size-cw)/2, (size-ch)/2, (size-cw)/2+cw, (size-ch)/2+ch)
	rs := newResizer(w, h, cw, ch, 1, func(y int, dst []float32) {
		row := gray.Pix[gray.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range w {
			dst[x] = float32(row[x])
		}
	})
	small := make([]float32, cw*ch)
	for y := range ch {
		rs.row(y, small[y*cw:])
	}
	out := image.NewGray(image.Rect(0, 0, size, size))
	for y := range size {
		sy := mirror(y-content.Min.Y, ch)
		for x := range size {
			out.Pix[y*out.Stride+x] = toByte(small[sy*cw+mirror(x-content.Min.X, cw)])
		}
	}
	return out, content
}

// mirror maps i to [0, n) by reflecting at the edges (…, 1, 0, 0, 1, …,
// n−1, n−1, n−2, …).
func mirror(i, n int) int {
	p := 2 * n
	i %= p
	if i < 0 {
		i += p
	}
	if i >= n {
		i = p - 1 - i
	}
	return i
}

// Chroma of JFIF's full-range YCbCr from 8-bit RGB, and back: offsets from
// Y per unit of Cb and Cr (centred on 0, not 128).
const (
	cbR, cbG, cbB = -0.168736, -0.331264, 0.5
	crR, crG, crB = 0.5, -0.418688, -0.081312
	rCr           = 1.402
	gCb, gCr      = -0.344136, -0.714136
	bCb           = 1.772
)

// Transfer returns lum coloured with sample's chroma: the Cb and Cr of the
// pixels of sample inside content, resized to lum's size with Lanczos
// (a = 3), added to lum's values as Y. Pixels whose colour would leave
// [0, 255] keep their Y and get as much of their chroma as fits. The result
// has lum's size, with origin (0, 0), and is opaque. Alpha in sample is
// ignored. An empty content rectangle leaves the photo gray.
func Transfer(lum *image.Gray, sample image.Image, content image.Rectangle) *image.RGBA {
	lb := lum.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, lb.Dx(), lb.Dy()))
	TransferRows(lum, sample, content, func(y int, rgb []uint8) error {
		o := out.Pix[y*out.Stride:]
		for x := range len(rgb) / 3 {
			o[4*x], o[4*x+1], o[4*x+2], o[4*x+3] = rgb[3*x], rgb[3*x+1], rgb[3*x+2], 255
		}
		return nil
	})
	return out
}

// TransferRows is Transfer one row at a time, for results too large to hold
// whole: it calls emit with each row, top to bottom, as 8-bit RGB (3 bytes
// per pixel; the slice is reused between calls), and returns emit's first
// error. Besides a row it holds the chroma's horizontal pass, the content's
// height × lum's width × 2 values.
func TransferRows(lum *image.Gray, sample image.Image, content image.Rectangle, emit func(y int, rgb []uint8) error) error {
	lb := lum.Bounds()
	W, H := lb.Dx(), lb.Dy()
	content = content.Intersect(sample.Bounds())
	if W == 0 || H == 0 {
		return nil
	}
	var rs *resizer // Cb, Cr interleaved; nil: no colour
	if content.Dx() > 0 && content.Dy() > 0 {
		rs = newResizer(content.Dx(), content.Dy(), W, H, 2, chromaRows(sample, content))
	}
	bc := make([]float32, 2*W) // one output row of Cb, Cr
	o := make([]uint8, 3*W)
	for y := range H {
		row := lum.Pix[lum.PixOffset(lb.Min.X, lb.Min.Y+y):]
		if rs != nil {
			rs.row(y, bc)
		}
		for x := range W {
			Y := float32(row[x])
			b, r := bc[2*x], bc[2*x+1]
			dr, dg, db := rCr*r, gCb*b+gCr*r, bCb*b
			s := float32(1)
			for _, d := range [3]float32{dr, dg, db} {
				switch {
				case Y+s*d > 255:
					s = (255 - Y) / d
				case Y+s*d < 0:
					s = -Y / d
				}
			}
			s = max(s, 0)
			o[3*x], o[3*x+1], o[3*x+2] = toByte(Y+s*dr), toByte(Y+s*dg), toByte(Y+s*db)
		}
		if err := emit(y, o); err != nil {
			return err
		}
	}
	return nil
}

// chromaRows reads the Cb and Cr of img's pixels inside r, interleaved.
func chromaRows(img image.Image, r image.Rectangle) func(y int, dst []float32) {
	return func(y int, dst []float32) {
		for x := range r.Dx() {
			c := color.NRGBAModel.Convert(img.At(r.Min.X+x, r.Min.Y+y)).(color.NRGBA)
			R, G, B := float32(c.R), float32(c.G), float32(c.B)
			dst[2*x] = cbR*R + cbG*G + cbB*B
			dst[2*x+1] = crR*R + crG*G + crB*B
		}
	}
}

// toByte rounds to the nearest level and clamps to [0, 255].
func toByte(v float32) uint8 {
	switch {
	case !(v > 0): // also NaN
		return 0
	case v >= 255:
		return 255
	}
	return uint8(v + 0.5)
}

// resizer resamples a w×h image of nc interleaved channels, read row by
// row through row, to ow×oh with a separable Lanczos-3 filter, antialiased
// when shrinking. The horizontal pass runs at once (h×ow values); rows of
// the vertical pass are made on demand, so that a large output never needs
// more than its own pixels.
type resizer struct {
	nc, ow int
	tmp    []float32
	vw     lanczos.Filter
}

func newResizer(w, h, ow, oh, nc int, row func(y int, dst []float32)) *resizer {
	src := make([]float32, w*nc)
	hw := lanczos.Weights(w, ow)
	tmp := make([]float32, h*ow*nc)
	for y := range h {
		row(y, src)
		dst := tmp[y*ow*nc : (y+1)*ow*nc]
		for o := range ow {
			ws := hw.W[hw.Off[o]:hw.Off[o+1]]
			s := src[hw.Lo[o]*nc:]
			for c := range nc {
				var acc float32
				for k, wt := range ws {
					acc += wt * s[k*nc+c]
				}
				dst[o*nc+c] = acc
			}
		}
	}
	return &resizer{nc: nc, ow: ow, tmp: tmp, vw: lanczos.Weights(h, oh)}
}

// row writes output row o (ow·nc values) into dst.
func (r *resizer) row(o int, dst []float32) {
	rowLen := r.ow * r.nc
	dst = dst[:rowLen]
	clear(dst)
	for k, wt := range r.vw.W[r.vw.Off[o]:r.vw.Off[o+1]] {
		s := r.tmp[(r.vw.Lo[o]+k)*rowLen : (r.vw.Lo[o]+k+1)*rowLen]
		for i := range dst {
			dst[i] += wt * s[i]
		}
	}
}
