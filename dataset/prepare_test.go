package dataset

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// makeFolder writes a source folder with good images (in a subfolder too),
// an undecodable file, a tiny image, an image in a format tinct does not
// read, a file that is not an image and a hidden file. It returns the
// folder and the number of good images.
func makeFolder(t *testing.T) (string, int) {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, dir, "a.png", encodePNG(t, pattern(40, 60, 1)))
	writeFile(t, dir, "b.jpg", encodeJPEG(t, pattern(64, 48, 2)))
	writeFile(t, dir, "c.JPEG", encodeJPEG(t, pattern(100, 100, 3)))
	writeFile(t, dir, "sub/d.png", encodePNG(t, pattern(32, 32, 4)))
	writeFile(t, dir, "sub/deeper/e.png", encodePNG(t, pattern(50, 33, 5)))
	writeFile(t, dir, "sub/f.jpg", encodeJPEG(t, pattern(70, 90, 6)))
	writeFile(t, dir, "broken.jpg", []byte("this is not a jpeg"))
	writeFile(t, dir, "tiny.png", encodePNG(t, pattern(20, 40, 7)))
	writeFile(t, dir, "notes.txt", []byte("hello"))
	writeFile(t, dir, "sub/old.gif", []byte("GIF89a"))
	writeFile(t, dir, ".DS_Store", []byte{0, 1, 2})
	writeFile(t, dir, ".git/x.png", encodePNG(t, pattern(40, 40, 8)))
	return dir, 6
}

func TestPrepareFolder(t *testing.T) {
	src, good := makeFolder(t)
	out := filepath.Join(t.TempDir(), "out")
	var calls, lastDone, lastTotal int
	sum, err := Prepare(context.Background(), PrepareOptions{
		Source: src, Out: out, ImageSize: 16, Val: 1, Test: 2, Seed: 5,
		Progress: func(done, total int) { calls++; lastDone, lastTotal = done, total },
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Train != good-3 || sum.Val != 1 || sum.Test != 2 {
		t.Errorf("train/val/test = %d/%d/%d, want %d/1/2", sum.Train, sum.Val, sum.Test, good-3)
	}
	// notes.txt is not an image: ignored, not skipped; old.gif is one
	wantSkipped := map[string]int{SkipUndecodable: 1, SkipTooSmall: 1, SkipNotImage: 1}
	if !maps.Equal(sum.Skipped, wantSkipped) || sum.Ignored != 1 {
		t.Errorf("skipped %v, ignored %d; want %v and 1", sum.Skipped, sum.Ignored, wantSkipped)
	}
	// every skipped file is named with its reason, in source order
	wantSkips := []Skip{
		{filepath.Join(src, "broken.jpg"), SkipUndecodable},
		{filepath.Join(src, "sub", "old.gif"), SkipNotImage},
		{filepath.Join(src, "tiny.png"), SkipTooSmall},
	}
	if !slices.Equal(sum.Skips, wantSkips) {
		t.Errorf("skips %v, want %v", sum.Skips, wantSkips)
	}
	var lines strings.Builder
	for _, s := range wantSkips {
		lines.WriteString(s.Path + "\t" + s.Reason + "\n")
	}
	if b, err := os.ReadFile(filepath.Join(out, SkippedFile)); err != nil || string(b) != lines.String() {
		t.Errorf("%s = %q, %v; want %q", SkippedFile, b, err, lines.String())
	}
	if sum.Format != FormatFolder || sum.SplitRule != SplitShuffle || sum.ImageSize != 16 {
		t.Errorf("summary %+v", sum)
	}
	if calls != good+3 || lastDone != good+3 || lastTotal != good+3 {
		t.Errorf("progress: %d calls, last (%d, %d); want %d calls ending (%[4]d, %[4]d)", calls, lastDone, lastTotal, good+3)
	}
	if !strings.Contains(sum.Reasons(), "1 undecodable") {
		t.Errorf("skip counts %q lack the undecodable photo", sum.Reasons())
	}

	m, err := ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.SourceFormat != FormatFolder || m.Seed != 5 || m.ImageSize != 16 || m.RecordBytes != 4*16*16 || !maps.Equal(m.Skipped, wantSkipped) {
		t.Errorf("manifest %+v", m)
	}
	// Only the manifest and the shards remain: no temporary files.
	var names []string
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{HeldOutFile, "manifest.json", SkippedFile, "test-00000.bin", "train-00000.bin", "val-00000.bin"}; !slices.Equal(names, want) {
		t.Errorf("output holds %v, want %v", names, want)
	}
}

// TestPrepareDeterministic checks that the same inputs and seed give the
// same bytes, and that another seed gives another split.
func TestPrepareDeterministic(t *testing.T) {
	src, _ := makeFolder(t)
	shas := func(seed uint64) []string {
		out := t.TempDir()
		if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 8, Val: 2, Test: 1, Seed: seed, Workers: 3}); err != nil {
			t.Fatal(err)
		}
		m, err := ReadManifest(out)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, split := range Splits {
			for _, sh := range m.Splits[split].Shards {
				s = append(s, split+":"+sh.SHA256)
			}
		}
		return s
	}
	a, b, c := shas(1), shas(1), shas(2)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different shards:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 1 and 2 gave the same split")
	}
}

func TestPrepareErrors(t *testing.T) {
	empty := t.TempDir()
	onlyBad := t.TempDir()
	writeFile(t, onlyBad, "x.jpg", []byte("garbage"))
	writeFile(t, onlyBad, "y.png", encodePNG(t, pattern(8, 8, 1)))
	three := t.TempDir()
	for i := range 3 {
		writeFile(t, three, filepath.Join("img", string(rune('a'+i))+".png"), encodePNG(t, pattern(32, 32, i)))
	}
	textFile := writeFile(t, t.TempDir(), "list.txt", []byte("a.jpg"))

	tests := []struct {
		name string
		opt  PrepareOptions
		want string // substring of the error
	}{
		{"empty folder", PrepareOptions{Source: empty, ImageSize: 8}, "no JPEG/PNG images"},
		{"empty folder, folder format", PrepareOptions{Source: empty, Format: FormatFolder, ImageSize: 8}, "no JPEG/PNG images"},
		{"nothing usable", PrepareOptions{Source: onlyBad, ImageSize: 8}, "no usable image"},
		{"val+test take all", PrepareOptions{Source: three, ImageSize: 8, Val: 2, Test: 1}, "leave none for training"},
		{"missing source", PrepareOptions{Source: filepath.Join(empty, "nope"), ImageSize: 8}, "no such file"},
		{"source is a text file", PrepareOptions{Source: textFile, ImageSize: 8}, "not a .parquet file"},
		{"no source", PrepareOptions{ImageSize: 8}, "no source"},
		{"size 0", PrepareOptions{Source: three, ImageSize: 0}, "image size 0"},
		{"size too big", PrepareOptions{Source: three, ImageSize: 5000}, "image size 5000"},
		{"negative val", PrepareOptions{Source: three, ImageSize: 8, Val: -1}, "must not be negative"},
		{"unknown format", PrepareOptions{Source: three, ImageSize: 8, Format: "tiff"}, "unknown format"},
		{"parquet format on images", PrepareOptions{Source: three, ImageSize: 8, Format: FormatCelebAHQ}, "no .parquet files"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if tc.name != "no output" {
				tc.opt.Out = out
			}
			_, err := Prepare(context.Background(), tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(out, ManifestFile)); err == nil {
				t.Error("a failed prepare left a manifest")
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("a failed prepare left files: %v", entries)
			}
		})
	}
	if _, err := Prepare(context.Background(), PrepareOptions{Source: three, ImageSize: 8}); err == nil || !strings.Contains(err.Error(), "no output") {
		t.Errorf("no output folder: err = %v", err)
	}
}

// TestPrepareCancel cancels in the middle and checks that nothing is left.
func TestPrepareCancel(t *testing.T) {
	src, _ := makeFolder(t)
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Prepare(ctx, PrepareOptions{Source: src, Out: out, ImageSize: 8, Progress: func(done, total int) {
		if done == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("a cancelled prepare left files: %v", entries)
	}
}

// TestPrepareReplaces prepares twice into one folder, the second time with
// fewer shards, and checks that the stale shards are gone and the new
// dataset opens.
func TestPrepareReplaces(t *testing.T) {
	withShardLimit(t, 2*4*8*8) // two 8×8 records per shard
	src, good := makeFolder(t)
	out := t.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "train-00002.bin")); err != nil {
		t.Fatalf("want 3 train shards for %d images: %v", good, err)
	}
	os.Remove(filepath.Join(src, "a.png"))
	os.Remove(filepath.Join(src, "b.jpg"))
	sum, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 8, Val: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Train != good-3 || sum.Val != 1 {
		t.Fatalf("second prepare: train %d val %d", sum.Train, sum.Val)
	}
	if _, err := os.Stat(filepath.Join(out, "train-00002.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale shard train-00002.bin still there (err %v)", err)
	}
	s, err := Open(out, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Verify(); err != nil || s.Len() != good-3 {
		t.Fatalf("reopened: len %d, verify %v", s.Len(), err)
	}
}

// TestPrepareOutputInsideSource checks that a dataset written inside its
// own source folder is not read back as input.
func TestPrepareOutputInsideSource(t *testing.T) {
	src := t.TempDir()
	for i := range 3 {
		writeFile(t, src, string(rune('a'+i))+".png", encodePNG(t, solid(40, 40, color.NRGBA{uint8(i), 0, 0, 255})))
	}
	out := filepath.Join(src, "prepared")
	for range 2 {
		sum, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 8})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Train != 3 || len(sum.Skipped) != 0 || len(sum.Skips) != 0 {
			t.Fatalf("summary %+v", sum)
		}
	}
}

// TestPrepareCrops checks that crops takes evenly spaced squares of each
// training photo, that held-out photos give their center square only, and
// that no crop of a held-out photo reaches the training split.
func TestPrepareCrops(t *testing.T) {
	dir := t.TempDir()
	const photos = 6
	for k := range photos {
		// three 40×40 bands, each coloured with the photo's number k
		img := solid(120, 40, color.NRGBA{A: 255})
		for y := range 40 {
			for x := range 120 {
				c := [3]color.NRGBA{{250, uint8(10 * k), 0, 255}, {0, 250, uint8(10 * k), 255}, {uint8(10 * k), 0, 250, 255}}[x/40]
				img.SetNRGBA(x, y, c)
			}
		}
		writeFile(t, dir, fmt.Sprintf("p%d.png", k), encodePNG(t, img))
	}
	out := filepath.Join(t.TempDir(), "out")
	sum, err := Prepare(context.Background(), PrepareOptions{Source: dir, Out: out, ImageSize: 15, Val: 1, Test: 1, Seed: 3, Crops: 3})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Train != 3*(photos-2) || sum.Val != 1 || sum.Test != 1 {
		t.Fatalf("train/val/test = %d/%d/%d, want %d/1/1", sum.Train, sum.Val, sum.Test, 3*(photos-2))
	}
	if m, err := ReadManifest(out); err != nil || m.Crops != 3 {
		t.Fatalf("manifest crops %v, %v; want 3", m, err)
	}
	// a record's band: 0 left (red), 1 center (green), 2 right (blue), and k
	band := func(c []float32) (int, int) {
		n := len(c) / 3
		px := func(p int) int { return int(math.Round(float64(c[p*n]+1) * 127.5)) }
		r, g, b := px(0), px(1), px(2)
		switch {
		case r == 250 && b == 0:
			return 0, g / 10
		case g == 250:
			return 1, b / 10
		case b == 250:
			return 2, r / 10
		}
		t.Fatalf("record is no band: %d %d %d", r, g, b)
		return 0, 0
	}
	held := map[int]bool{}
	for _, split := range []string{SplitVal, SplitTest} {
		colors, _ := loadAll(t, out, split)
		for _, c := range colors {
			b, k := band(c)
			if b != 1 {
				t.Errorf("%s holds band %d of photo %d, want the center", split, b, k)
			}
			held[k] = true
		}
	}
	// held-out.txt names the held-out photos, split by split
	b, err := os.ReadFile(filepath.Join(out, HeldOutFile))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		split, path, _ := strings.Cut(line, "\t")
		var k int
		if _, err := fmt.Sscanf(filepath.Base(path), "p%d.png", &k); err != nil || !held[k] {
			t.Errorf("%s lists %q, not a held-out photo", HeldOutFile, line)
		}
		listed = append(listed, split)
	}
	if !slices.Equal(listed, []string{SplitVal, SplitTest}) {
		t.Errorf("%s lists splits %v, want val then test", HeldOutFile, listed)
	}
	seen := map[[2]int]int{}
	colors, _ := loadAll(t, out, SplitTrain)
	for _, c := range colors {
		b, k := band(c)
		if held[k] {
			t.Errorf("train holds band %d of held-out photo %d", b, k)
		}
		seen[[2]int{b, k}]++
	}
	for k := range photos {
		for b := range 3 {
			if want := map[bool]int{false: 1, true: 0}[held[k]]; seen[[2]int{b, k}] != want {
				t.Errorf("photo %d band %d in train %d times, want %d", k, b, seen[[2]int{b, k}], want)
			}
		}
	}
}
