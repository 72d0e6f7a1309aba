package chroma

import (
	"image"
	"image/color"
	"math/rand/v2"
	"testing"
)

// luma is BT.601 luma as Pillow's convert("L") (and dataset.ToGray)
// computes it.
func luma(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}

func randomGray(rng *rand.Rand, w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = uint8(rng.IntN(256))
	}
	return g
}

func randomRGBA(rng *rand.Rand, w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	return m
}

// TestTransferKeepsLuminance: whatever the colours, the result's luminance
// is the photo's to within one level (rounding), at any pair of sizes,
// including saturated colours on very dark and very light pixels.
func TestTransferKeepsLuminance(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		w, h    int
		size    int
		content image.Rectangle
	}{
		{301, 203, 16, image.Rect(0, 3, 16, 13)},
		{64, 64, 64, image.Rect(0, 0, 64, 64)}, // same size: colour on the photo's own luminance
		{7, 5, 16, image.Rect(0, 3, 16, 13)},   // a photo smaller than the model
		{1, 1, 8, image.Rect(0, 0, 8, 8)},
	} {
		lum := randomGray(rng, c.w, c.h)
		for i := 0; i < len(lum.Pix); i += 7 { // extremes, where colour cannot fit
			lum.Pix[i] = [2]uint8{0, 255}[i%2]
		}
		out := Transfer(lum, randomRGBA(rng, c.size, c.size), c.content)
		if out.Bounds() != image.Rect(0, 0, c.w, c.h) {
			t.Fatalf("%dx%d: result %v", c.w, c.h, out.Bounds())
		}
		exact, coloured := 0, 0
		for i, y := range lum.Pix {
			p := out.Pix[4*i : 4*i+4]
			l := luma(p[0], p[1], p[2])
			if d := int(l) - int(y); d < -1 || d > 1 {
				t.Fatalf("%dx%d pixel %d: luminance %d, photo %d (RGB %v)", c.w, c.h, i, l, y, p[:3])
			} else if d == 0 {
				exact++
			}
			if p[0] != p[1] || p[1] != p[2] {
				coloured++
			}
			if p[3] != 255 {
				t.Fatalf("alpha %d", p[3])
			}
		}
		if exact < len(lum.Pix)*9/10 || coloured < len(lum.Pix)/2 {
			t.Errorf("%dx%d: %d of %d pixels keep their luminance exactly, %d coloured", c.w, c.h, exact, len(lum.Pix), coloured)
		}
	}
}

// TestTransferCarriesColour: a flat colour on a photo whose luminance is
// that colour's comes back as that colour, at any size.
func TestTransferCarriesColour(t *testing.T) {
	for _, want := range []color.RGBA{{200, 80, 40, 255}, {30, 90, 160, 255}, {128, 128, 128, 255}, {250, 250, 10, 255}} {
		sample := image.NewRGBA(image.Rect(0, 0, 16, 16))
		for i := 0; i < len(sample.Pix); i += 4 {
			copy(sample.Pix[i:], []uint8{want.R, want.G, want.B, 255})
		}
		// colours outside the content must not bleed in
		for y := range 3 {
			for x := range 16 {
				sample.Set(x, y, color.RGBA{0, 255, 0, 255})
			}
		}
		lum := image.NewGray(image.Rect(0, 0, 300, 200))
		for i := range lum.Pix {
			lum.Pix[i] = luma(want.R, want.G, want.B)
		}
		out := Transfer(lum, sample, image.Rect(0, 3, 16, 13))
		for i := 0; i < len(out.Pix); i += 4 {
			for c, v := range []uint8{want.R, want.G, want.B} {
				if d := int(out.Pix[i+c]) - int(v); d < -2 || d > 2 {
					t.Fatalf("%v: pixel %d is %v", want, i/4, out.Pix[i:i+3])
				}
			}
		}
	}
}

// TestTransferGamut: a light pixel with strong blue keeps its luminance and
// gets a paler blue, not a clipped colour of another lightness.
func TestTransferGamut(t *testing.T) {
	sample := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for i := 0; i < len(sample.Pix); i += 4 {
		copy(sample.Pix[i:], []uint8{0, 0, 255, 255})
	}
	lum := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range lum.Pix {
		lum.Pix[i] = 240
	}
	out := Transfer(lum, sample, sample.Bounds())
	p := out.Pix[:3]
	if l := luma(p[0], p[1], p[2]); l < 239 || l > 241 || !(p[2] > p[0] && p[2] > p[1]) {
		t.Errorf("light blue: %v (luminance %d)", p, l)
	}
}

// TestTransferNoColour: an empty content rectangle leaves the photo gray.
func TestTransferNoColour(t *testing.T) {
	lum := randomGray(rand.New(rand.NewPCG(3, 4)), 9, 7)
	out := Transfer(lum, image.NewRGBA(image.Rect(0, 0, 4, 4)), image.Rectangle{})
	for i, y := range lum.Pix {
		if p := out.Pix[4*i : 4*i+3]; p[0] != y || p[1] != y || p[2] != y {
			t.Fatalf("pixel %d: %v, want gray %d", i, p, y)
		}
	}
	if out := Transfer(image.NewGray(image.Rectangle{}), image.NewRGBA(image.Rect(0, 0, 4, 4)), image.Rect(0, 0, 4, 4)); !out.Bounds().Empty() {
		t.Errorf("empty photo: %v", out.Bounds())
	}
}

// TestFit: the whole frame, resized to the model's size along its longer
// side, centred and mirrored into the rest of the square; nothing cropped.
func TestFit(t *testing.T) {
	for _, c := range []struct {
		w, h, size int
		content    image.Rectangle
	}{
		{300, 200, 16, image.Rect(0, 2, 16, 13)}, // 200·16/300 = 10.7 → 11 rows
		{200, 300, 16, image.Rect(2, 0, 13, 16)},
		{64, 64, 16, image.Rect(0, 0, 16, 16)},
		{3000, 20, 16, image.Rect(0, 7, 16, 8)}, // a thin strip keeps one row
		{5, 4, 16, image.Rect(0, 1, 16, 14)},    // smaller than the model: enlarged
	} {
		// a horizontal ramp on the left half, flat 200 on the right
		g := image.NewGray(image.Rect(10, 20, 10+c.w, 20+c.h))
		for y := range c.h {
			for x := range c.w {
				v := uint8(200)
				if x < c.w/2 {
					v = uint8(20 + 160*x/(c.w/2))
				}
				g.Pix[y*g.Stride+x] = v
			}
		}
		in, content := Fit(g, c.size)
		if in.Bounds() != image.Rect(0, 0, c.size, c.size) || content != c.content {
			t.Errorf("%dx%d: %v, content %v, want %v", c.w, c.h, in.Bounds(), content, c.content)
			continue
		}
		at := func(x, y int) uint8 { return in.Pix[y*in.Stride+x] }
		// every row of the content is the same as the photo's rows are (to
		// a level: the filter's weights differ at the borders)
		for y := content.Min.Y; y < content.Max.Y; y++ {
			for x := content.Min.X; x < content.Max.X; x++ {
				if d := int(at(x, y)) - int(at(x, content.Min.Y)); d < -1 || d > 1 {
					t.Fatalf("%dx%d: row %d differs from row %d at x %d", c.w, c.h, y, content.Min.Y, x)
				}
			}
		}
		// the right side is the photo's flat 200; the left edge is dark
		if v := at(content.Max.X-1, content.Min.Y); v < 198 || v > 202 {
			t.Errorf("%dx%d: right edge %d, want 200", c.w, c.h, v)
		}
		if v := at(content.Min.X, content.Min.Y); v > 60 && c.w > 8 {
			t.Errorf("%dx%d: left edge %d, want dark", c.w, c.h, v)
		}
		// outside the content: mirrored
		for y := range c.size {
			for x := range c.size {
				mx := content.Min.X + mirror(x-content.Min.X, content.Dx())
				my := content.Min.Y + mirror(y-content.Min.Y, content.Dy())
				if at(x, y) != at(mx, my) {
					t.Fatalf("%dx%d: (%d,%d) = %d, its mirror (%d,%d) = %d", c.w, c.h, x, y, at(x, y), mx, my, at(mx, my))
				}
			}
		}
		if content.Min.Y > 0 && at(5, content.Min.Y-1) != at(5, content.Min.Y) {
			t.Errorf("%dx%d: the row above the content is not the first row mirrored", c.w, c.h)
		}
	}
	if in, content := Fit(image.NewGray(image.Rectangle{}), 16); !in.Bounds().Empty() || !content.Empty() {
		t.Errorf("empty photo: %v %v", in.Bounds(), content)
	}
}

func TestMirror(t *testing.T) {
	var got []int
	for i := -4; i < 8; i++ {
		got = append(got, mirror(i, 3))
	}
	want := []int{2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("mirror(-4…7, 3) = %v, want %v", got, want)
		}
	}
	if mirror(5, 1) != 0 || mirror(-3, 1) != 0 {
		t.Error("mirror with n = 1")
	}
}

func BenchmarkTransfer3000x2000(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	lum := randomGray(rng, 3000, 2000)
	sample := randomRGBA(rng, 128, 128)
	for b.Loop() {
		Transfer(lum, sample, image.Rect(0, 21, 128, 107))
	}
}
