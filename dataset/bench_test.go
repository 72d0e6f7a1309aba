package dataset

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkResize measures the CelebA-HQ case: a 256×256 image to 128×128.
func BenchmarkResize(b *testing.B) {
	img := pattern(256, 256, 1)
	for b.Loop() {
		Resize(img, 128)
	}
}

// BenchmarkDecodeResize adds JPEG decoding, as Prepare does per image.
func BenchmarkDecodeResize(b *testing.B) {
	data := encodeJPEG(b, pattern(256, 256, 1))
	for b.Loop() {
		img, err := Decode(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		Resize(img, 128)
	}
}

// BenchmarkLoad measures one Load of a 128×128 record with a flip.
func BenchmarkLoad(b *testing.B) {
	src := b.TempDir()
	writeFile(b, src, "x.png", encodePNG(b, pattern(128, 128, 1)))
	out := b.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 128}); err != nil {
		b.Fatal(err)
	}
	s, err := Open(out, SplitTrain)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, g := make([]float32, 3*128*128), make([]float32, 128*128)
	for b.Loop() {
		if err := s.Load(0, c, g, true); err != nil {
			b.Fatal(err)
		}
	}
}
