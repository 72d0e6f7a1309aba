package main

import (
	"bytes"
	"encoding/binary"
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
