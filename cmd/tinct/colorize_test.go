package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/tinct/tinct/dataset"
)

// gradient returns a w×h colour photo.
func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(255 * x / w), uint8(255 * y / h), uint8((x*7 + y*3) % 256), 255})
		}
	}
	return img
}

// writePNG writes img as a PNG, with an eXIf orientation chunk unless
// orientation is 0.
func writePNG(t *testing.T, path string, img image.Image, orientation uint16) {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	if orientation != 0 {
		tiff := []byte{'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, byte(orientation), 0, 0, 0, 0, 0, 0, 0}
		chunk := binary.BigEndian.AppendUint32(nil, uint32(len(tiff)))
		chunk = append(append(chunk, "eXIf"...), tiff...)
		chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
		const ihdrEnd = 8 + 8 + 13 + 4
		data = append(append(append([]byte(nil), data[:ihdrEnd]...), chunk...), data[ihdrEnd:]...)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// colorizeArgs runs tinct colorize with the tiny network of tinyFiles.
func colorizeArgs(t *testing.T, weights, out string, extra ...string) {
	t.Helper()
	args := append([]string{"colorize", "--checkpoint", weights, "--image-size", "16", "--widths", "4,8", "--block-depth", "2",
		"--steps", "10", "--out", out}, extra...)
	if msg, err := run(t, args...); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, msg)
	}
}

// TestColorizeOrientation: tinct colorize turns a photo upright by its
// EXIF orientation before colorizing it.
func TestColorizeOrientation(t *testing.T) {
	dir, _, _, _ := tinyFiles(t)
	upright := gradient(30, 48)
	writePNG(t, filepath.Join(dir, "upright.png"), upright, 0)
	writePNG(t, filepath.Join(dir, "sideways.png"), dataset.Orient(upright, 8), 6)
	out := filepath.Join(dir, "out")
	colorizeArgs(t, filepath.Join(dir, "w.safetensors"), out, filepath.Join(dir, "upright.png"), filepath.Join(dir, "sideways.png"))
	a := readPNG(t, filepath.Join(out, "upright-gray.png")).(*image.Gray)
	b := readPNG(t, filepath.Join(out, "sideways-gray.png")).(*image.Gray)
	if a.Bounds() != b.Bounds() || !bytes.Equal(a.Pix, b.Pix) {
		t.Error("the sideways photo tagged with orientation 6 is not colorized upright")
	}
}

// TestColorizeFullRes: by default tinct colorize writes the colorization at
// the photo's own size on its own luminance, and the model-size sample of
// the whole frame beside it; --full-res=false writes only the latter.
func TestColorizeFullRes(t *testing.T) {
	dir, _, _, _ := tinyFiles(t)
	src := gradient(300, 200)
	writePNG(t, filepath.Join(dir, "photo.png"), src, 0)
	w := filepath.Join(dir, "w.safetensors")
	out := filepath.Join(dir, "full")
	colorizeArgs(t, w, out, "--samples", "2", filepath.Join(dir, "photo.png"))
	for k := 1; k <= 2; k++ {
		full := readPNG(t, filepath.Join(out, fmt.Sprintf("photo-%d.png", k)))
		if full.Bounds() != src.Bounds() {
			t.Fatalf("photo-%d.png is %v, want %v", k, full.Bounds(), src.Bounds())
		}
		want, got := dataset.ToGray(src), dataset.ToGray(full)
		for i := range want.Pix {
			if d := int(got.Pix[i]) - int(want.Pix[i]); d < -1 || d > 1 {
				t.Fatalf("photo-%d.png: luminance %d at pixel %d, the photo's is %d", k, got.Pix[i], i, want.Pix[i])
			}
		}
		if b := readPNG(t, filepath.Join(out, fmt.Sprintf("photo-%d-model.png", k))).Bounds(); b != image.Rect(0, 0, 16, 11) {
			t.Errorf("photo-%d-model.png is %v, want 16×11", k, b)
		}
	}
	small := filepath.Join(dir, "small")
	colorizeArgs(t, w, small, "--full-res=false", filepath.Join(dir, "photo.png"))
	if b := readPNG(t, filepath.Join(small, "photo-1.png")).Bounds(); b != image.Rect(0, 0, 16, 11) {
		t.Errorf("--full-res=false: photo-1.png is %v, want the 16×11 model-size sample", b)
	}
}
