package dataset

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// solid returns a w×h NRGBA image filled with c.
func solid(w, h int, c color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

// pattern returns a w×h image whose pixels all differ a little, seeded by k.
func pattern(w, h, k int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := img.PixOffset(x, y)
			img.Pix[i] = uint8(x*7 + k*31)
			img.Pix[i+1] = uint8(y*5 + k*17)
			img.Pix[i+2] = uint8((x+y)*3 + k*11)
			img.Pix[i+3] = 255
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeFile writes data to dir/rel, creating folders.
func writeFile(t testing.TB, dir, rel string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// withShardLimit lowers the shard size limit for the duration of a test.
func withShardLimit(t *testing.T, limit int) {
	t.Helper()
	old := shardLimit
	shardLimit = limit
	t.Cleanup(func() { shardLimit = old })
}

// loadAll loads every image of a split as bytes-per-channel values
// (rounded back from [-1, 1]) for easy comparison.
func loadAll(t *testing.T, dir, split string) (colors [][]float32, grays [][]float32) {
	t.Helper()
	s, err := Open(dir, split)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := s.ImageSize() * s.ImageSize()
	for i := 0; i < s.Len(); i++ {
		c, g := make([]float32, 3*n), make([]float32, n)
		if err := s.Load(i, c, g, false); err != nil {
			t.Fatal(err)
		}
		colors, grays = append(colors, c), append(grays, g)
	}
	return colors, grays
}

// isConstant reports whether every channel plane of a CHW color image is
// constant with the given byte values.
func planeIs(v []float32, want uint8) bool {
	for _, x := range v {
		if x != float32(want)/127.5-1 {
			return false
		}
	}
	return true
}

// colorIs reports whether a loaded CHW color image is the solid color c.
func colorIs(v []float32, c color.NRGBA) bool {
	n := len(v) / 3
	return planeIs(v[:n], c.R) && planeIs(v[n:2*n], c.G) && planeIs(v[2*n:], c.B)
}
