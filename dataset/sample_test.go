package dataset

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// sampleDir is the repository's bundled sample set.
var sampleDir = filepath.Join("..", "data", "sample")

func TestPrepareSample(t *testing.T) {
	entries, err := os.ReadDir(sampleDir)
	if err != nil {
		t.Fatalf("the bundled sample set is missing: %v", err)
	}
	var images, others int
	var bytes int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		bytes += info.Size()
		if isImageName(e.Name()) {
			images++
		} else {
			others++
		}
	}
	if images < 60 || bytes > 2<<20 {
		t.Errorf("sample set: %d images, %d bytes; want at least 60 images in at most 2 MiB", images, bytes)
	}
	if _, err := os.Stat(filepath.Join(sampleDir, "NOTICE.md")); err != nil {
		t.Errorf("the sample set must carry its NOTICE.md: %v", err)
	}

	out := t.TempDir()
	sum, err := Prepare(context.Background(), PrepareOptions{Source: sampleDir, Out: out, ImageSize: 64, Val: 4, Test: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(sum)
	if sum.Train != images-8 || sum.Val != 4 || sum.Test != 4 {
		t.Errorf("train/val/test = %d/%d/%d, want %d/4/4", sum.Train, sum.Val, sum.Test, images-8)
	}
	// NOTICE.md is not a bad image: it is ignored, not skipped
	if len(sum.Skipped) != 0 || len(sum.Skips) != 0 || sum.Ignored != others {
		t.Errorf("skipped %v %v, ignored %d; want nothing skipped and %d ignored", sum.Skipped, sum.Skips, sum.Ignored, others)
	}
	for _, split := range Splits {
		s, err := Open(out, split)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Verify(); err != nil {
			t.Error(err)
		}
		s.Close()
	}
}
