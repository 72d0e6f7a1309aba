package serve

import (
	"bytes"
	"image"
	"image/png"
	"math/rand/v2"
	"testing"
)

// TestPNGStream: what pngStream writes row by row decodes, with the
// standard decoder, to exactly the pixels written, for smooth and noisy
// content (every filter gets chosen) and for sizes that span several IDAT
// chunks.
func TestPNGStream(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, size := range [][2]int{{1, 1}, {3, 2}, {301, 203}, {700, 600}} {
		w, h := size[0], size[1]
		want := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				i := want.PixOffset(x, y)
				if y%3 == 0 {
					want.Pix[i], want.Pix[i+1], want.Pix[i+2] = uint8(rng.Uint32()), uint8(rng.Uint32()), uint8(rng.Uint32())
				} else {
					want.Pix[i], want.Pix[i+1], want.Pix[i+2] = uint8(x+y), uint8(2*x), uint8(y*y)
				}
				want.Pix[i+3] = 255
			}
		}
		var b bytes.Buffer
		p, err := newPNGStream(&b, w, h)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]byte, 3*w)
		for y := range h {
			for x := range w {
				copy(row[3*x:], want.Pix[want.PixOffset(x, y):][:3])
			}
			if err := p.writeRow(row); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.close(); err != nil {
			t.Fatal(err)
		}
		got, err := png.Decode(&b)
		if err != nil {
			t.Fatalf("%dx%d: %v", w, h, err)
		}
		g, ok := got.(*image.RGBA)
		if !ok || g.Bounds() != want.Bounds() || !bytes.Equal(g.Pix, want.Pix) {
			t.Fatalf("%dx%d: decoded %T %v differs from what was written", w, h, got, got.Bounds())
		}
	}
}
