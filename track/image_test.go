package track

import (
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestToImageGray(t *testing.T) {
	nan := float32(math.NaN())
	in := []float32{-1, 0, 1, -2, 2, 0.5, -0.5, nan, 0.999, -0.999, 1.0 / 255, -1.0 / 255}
	// floor((v+1)*127.5 + 0.5): 0 → 128 (127.5 rounds up); NaN → 0.
	want := []uint8{0, 128, 255, 0, 255, 191, 64, 0, 255, 0, 128, 127}
	img, ok := ToImage(in, 1, 3, 4).(*image.Gray)
	if !ok {
		t.Fatalf("c=1 gave %T, want *image.Gray", ToImage(in, 1, 3, 4))
	}
	if img.Bounds() != image.Rect(0, 0, 4, 3) {
		t.Fatalf("bounds %v", img.Bounds())
	}
	for i, w := range want {
		if got := img.GrayAt(i%4, i/4).Y; got != w {
			t.Errorf("value %v → %d, want %d", in[i], got, w)
		}
	}
}

func TestToImageRGB(t *testing.T) {
	// 1×2 image, planes R, G, B.
	chw := []float32{
		-1, 1, // R
		0, 3, // G
		1, -3, // B
	}
	img := ToImage(chw, 3, 1, 2)
	want := []color.RGBA{{0, 128, 255, 255}, {255, 255, 0, 255}}
	for x, w := range want {
		if got := color.RGBAModel.Convert(img.At(x, 0)); got != w {
			t.Errorf("pixel %d = %v, want %v", x, got, w)
		}
	}
}

func TestToImagePanics(t *testing.T) {
	for name, f := range map[string]func(){
		"two channels": func() { ToImage(make([]float32, 8), 2, 2, 2) },
		"short data":   func() { ToImage(make([]float32, 11), 3, 2, 2) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func solid(w, h int, c color.Color) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, c)
		}
	}
	return img
}

func TestGrid(t *testing.T) {
	red := color.RGBA{255, 0, 0, 255}
	green := color.RGBA{0, 255, 0, 255}
	blue := color.RGBA{0, 0, 255, 255}
	white := color.RGBA{255, 255, 255, 255}
	// Cells are 4×3 (widest 4, tallest 3); 3 columns (longest row), 2 rows.
	a := solid(2, 3, red)   // centered: x offset 1
	b := solid(4, 1, green) // centered: y offset 1
	c := solid(3, 2, blue)  // offset (0,0) after rounding (1/2, 1/2)
	// A gray image whose bounds do not start at the origin.
	g := image.NewGray(image.Rect(10, 10, 14, 13))
	for i := range g.Pix {
		g.Pix[i] = 77
	}
	const pad = 2
	out := Grid([][]image.Image{{a, b, nil}, {c, nil, g}}, pad)
	if want := image.Rect(0, 0, 3*4+2*pad, 2*3+pad); out.Bounds() != want {
		t.Fatalf("bounds %v, want %v", out.Bounds(), want)
	}
	// at returns the colour at (x, y) inside cell (row, col).
	at := func(row, col, x, y int) color.RGBA {
		return out.RGBAAt(col*(4+pad)+x, row*(3+pad)+y)
	}
	checks := []struct {
		row, col, x, y int
		want           color.RGBA
	}{
		{0, 0, 0, 0, white}, {0, 0, 1, 0, red}, {0, 0, 2, 2, red}, {0, 0, 3, 1, white},
		{0, 1, 0, 0, white}, {0, 1, 0, 1, green}, {0, 1, 3, 1, green}, {0, 1, 3, 2, white},
		{0, 2, 1, 1, white}, // nil cell
		{1, 0, 0, 0, blue}, {1, 0, 2, 1, blue}, {1, 0, 3, 0, white}, {1, 0, 0, 2, white},
		{1, 2, 0, 0, color.RGBA{77, 77, 77, 255}}, {1, 2, 3, 2, color.RGBA{77, 77, 77, 255}},
	}
	for _, c := range checks {
		if got := at(c.row, c.col, c.x, c.y); got != c.want {
			t.Errorf("cell (%d,%d) pixel (%d,%d) = %v, want %v", c.row, c.col, c.x, c.y, got, c.want)
		}
	}
	// Padding between cells is background.
	for y := range out.Bounds().Dy() {
		for _, x := range []int{4, 5, 10, 11} {
			if got := out.RGBAAt(x, y); got != white {
				t.Fatalf("pad pixel (%d,%d) = %v", x, y, got)
			}
		}
	}
	if b := Grid(nil, 3).Bounds(); !b.Empty() {
		t.Errorf("empty grid has bounds %v", b)
	}
}

func TestSavePNG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grid.png")
	img := ToImage([]float32{-1, 0, 1, 0.5}, 1, 2, 2)
	for range 2 { // the second save replaces the first
		if err := SavePNG(path, img); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	assertSamePixels(t, "saved", decodePNG(t, data), img)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the PNG (no temp files)", len(entries))
	}
	if st, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if err := SavePNG(filepath.Join(dir, "missing", "x.png"), img); err == nil {
		t.Error("save into a missing directory: no error")
	}
}
