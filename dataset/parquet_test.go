package dataset

import (
	"context"
	"fmt"
	"image/color"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// hfImage and hfRow mirror the schema the Hugging Face datasets library
// writes for CelebA-HQ: image is an optional struct {bytes, path}.
type hfImage struct {
	Bytes []byte `parquet:"bytes,optional"`
	Path  string `parquet:"path,optional"`
}

type hfRow struct {
	Image *hfImage `parquet:"image,optional"`
	Label int64    `parquet:"label"`
}

// grayRow mirrors the 128-gray derivative. The color column is
// dictionary-encoded, as pyarrow does by default, to cover that decoder.
type grayRow struct {
	Color    []byte `parquet:"color,optional,dict"`
	Gray     []byte `parquet:"gray,optional"`
	SourceID string `parquet:"source_id"`
}

// writeParquet writes rows to dir/rel in row groups of two rows, so that
// readers must cross row groups, with any extra writer options.
func writeParquet[T any](t *testing.T, dir, rel string, rows []T, opts ...parquet.WriterOption) string {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[T](f, append([]parquet.WriterOption{parquet.MaxRowsPerRowGroup(2)}, opts...)...)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// faceColor is the solid color of test face k.
func faceColor(k int) color.NRGBA {
	return color.NRGBA{uint8(10 + 20*k), uint8(250 - 15*k), uint8(7 * k), 255}
}

// faces returns n rows of solid-color PNG faces starting at color k0.
func faces(t *testing.T, k0, n int) []hfRow {
	var rows []hfRow
	for k := k0; k < k0+n; k++ {
		rows = append(rows, hfRow{Image: &hfImage{Bytes: encodePNG(t, solid(40, 40, faceColor(k))), Path: fmt.Sprintf("%d.png", k)}, Label: int64(k % 2)})
	}
	return rows
}

func TestPrepareCelebAHQ(t *testing.T) {
	src := t.TempDir()
	train0 := faces(t, 0, 3)
	train0 = append(train0, hfRow{Image: &hfImage{Bytes: []byte("not an image"), Path: "bad.jpg"}})
	// Like pyarrow's output: snappy, version-1 data pages.
	writeParquet(t, src, "data/train-00000-of-00002.parquet", train0, parquet.Compression(&parquet.Snappy), parquet.DataPageVersion(1))
	train1 := faces(t, 3, 1)
	train1 = append(train1, hfRow{Image: &hfImage{Bytes: encodeJPEG(t, pattern(48, 48, 1)), Path: "j.jpg"}})
	writeParquet(t, src, "data/train-00001-of-00002.parquet", train1)
	val := faces(t, 10, 2)
	val = append(val, hfRow{Image: nil, Label: 1}) // a null image
	val = append(val, faces(t, 12, 3)...)
	writeParquet(t, src, "data/validation-00000-of-00001.parquet", val, parquet.Compression(&parquet.Zstd))
	writeFile(t, src, "README.md", []byte("# CelebA-HQ"))

	for _, format := range []string{FormatAuto, FormatCelebAHQ} {
		t.Run(format, func(t *testing.T) {
			out := t.TempDir()
			sum, err := Prepare(context.Background(), PrepareOptions{Source: src, Format: format, Out: out, ImageSize: 32, Val: 2, Test: 2, Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Format != FormatCelebAHQ || sum.SplitRule != SplitByFileName {
				t.Errorf("format %s, rule %s", sum.Format, sum.SplitRule)
			}
			if sum.Train != 5 || sum.Val != 2 || sum.Test != 2 {
				t.Errorf("train/val/test = %d/%d/%d, want 5/2/2", sum.Train, sum.Val, sum.Test)
			}
			// README.md is ignored; the bad rows are named by file and row
			wantSkipped := map[string]int{SkipUndecodable: 1, SkipMissing: 1, SkipUnused: 1}
			if !maps.Equal(sum.Skipped, wantSkipped) || sum.Ignored != 1 {
				t.Errorf("skipped %v, ignored %d; want %v and 1", sum.Skipped, sum.Ignored, wantSkipped)
			}
			wantSkips := []Skip{
				{filepath.Join(src, "data/train-00000-of-00002.parquet") + " row 3", SkipUndecodable},
				{filepath.Join(src, "data/validation-00000-of-00001.parquet") + " row 2", SkipMissing},
				{filepath.Join(src, "data/validation-00000-of-00001.parquet") + " row 5", SkipUnused},
			}
			if !slices.Equal(sum.Skips, wantSkips) {
				t.Errorf("skips %v, want %v", sum.Skips, wantSkips)
			}
			// Validation is the first two usable validation rows, test the
			// next two, in file order; training keeps file order too.
			for split, ks := range map[string][]int{SplitVal: {10, 11}, SplitTest: {12, 13}, SplitTrain: {0, 1, 2, 3}} {
				colors, grays := loadAll(t, out, split)
				for i, k := range ks {
					c := faceColor(k)
					if !colorIs(colors[i], c) || !planeIs(grays[i], luma(c.R, c.G, c.B)) {
						t.Errorf("%s[%d] is not face %d", split, i, k)
					}
				}
			}
		})
	}
}

func TestPrepareParquetShuffleFallback(t *testing.T) {
	src := t.TempDir()
	rows := faces(t, 0, 6)
	rows = append(rows, hfRow{Image: &hfImage{Bytes: encodePNG(t, solid(16, 16, faceColor(9)))}}) // too small
	file := writeParquet(t, src, "celeba.parquet", rows)

	out := t.TempDir()
	sum, err := Prepare(context.Background(), PrepareOptions{Source: file, Out: out, ImageSize: 8, Val: 1, Test: 1, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if sum.SplitRule != SplitShuffle || sum.Train != 4 || sum.Val != 1 || sum.Test != 1 {
		t.Errorf("rule %s, train/val/test = %d/%d/%d, want shuffle 4/1/1", sum.SplitRule, sum.Train, sum.Val, sum.Test)
	}
	if !maps.Equal(sum.Skipped, map[string]int{SkipTooSmall: 1}) {
		t.Errorf("skipped %v", sum.Skipped)
	}
	if len(sum.Notes) == 0 || !strings.Contains(sum.Notes[0], "not named by split") {
		t.Errorf("notes %q should explain the fallback", sum.Notes)
	}
}

func TestPrepareGray128(t *testing.T) {
	red := color.NRGBA{220, 30, 30, 255}
	colorPNG := encodePNG(t, solid(32, 32, red))
	// The given gray is deliberately not the luma of the color, to show it
	// is used as given.
	grayPNG := func(v uint8) []byte {
		return encodePNG(t, ToGray(solid(32, 32, color.NRGBA{v, v, v, 255})))
	}
	src := t.TempDir()
	writeParquet(t, src, "gray128-train.parquet", []grayRow{
		{Color: colorPNG, Gray: grayPNG(7), SourceID: "a"},
		{Color: colorPNG, Gray: grayPNG(9), SourceID: "b"},
		{Color: colorPNG, Gray: []byte("broken"), SourceID: "c"},
		{Color: colorPNG, Gray: encodePNG(t, ToGray(solid(48, 48, red))), SourceID: "d"}, // size mismatch
		{Color: colorPNG, Gray: grayPNG(11), SourceID: "e"},
	})
	writeParquet(t, src, "gray128-validation.parquet", []grayRow{
		{Color: colorPNG, Gray: grayPNG(100), SourceID: "v1"},
		{Color: colorPNG, SourceID: "v2"}, // no gray
		{Color: colorPNG, Gray: grayPNG(101), SourceID: "v3"},
	})

	tests := []struct {
		name   string
		format string
		size   int
	}{
		{"auto, same size", FormatAuto, 32},
		{"explicit, resized", FormatGray128, 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			sum, err := Prepare(context.Background(), PrepareOptions{Source: src, Format: tc.format, Out: out, ImageSize: tc.size, Val: 1, Test: 1})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Format != FormatGray128 || sum.SplitRule != SplitByFileName || sum.Train != 3 || sum.Val != 1 || sum.Test != 1 {
				t.Fatalf("summary %+v", sum)
			}
			wantSkipped := map[string]int{SkipUndecodable: 1, SkipGrayMismatch: 1, SkipMissing: 1}
			if !maps.Equal(sum.Skipped, wantSkipped) {
				t.Errorf("skipped %v, want %v", sum.Skipped, wantSkipped)
			}
			for split, grays := range map[string][]uint8{SplitTrain: {7, 9, 11}, SplitVal: {100}, SplitTest: {101}} {
				cs, gs := loadAll(t, out, split)
				for i, v := range grays {
					if !colorIs(cs[i], red) || !planeIs(gs[i], v) {
						t.Errorf("%s[%d]: want red with the given gray %d", split, i, v)
					}
				}
			}
		})
	}
}

func TestPrepareParquetErrors(t *testing.T) {
	dir := t.TempDir()
	grayFile := writeParquet(t, dir, "g/x.parquet", []grayRow{{Color: encodePNG(t, pattern(32, 32, 1)), Gray: encodePNG(t, pattern(32, 32, 1))}})
	damaged := writeFile(t, dir, "d/train.parquet", []byte("PAR1 this is not really parquet PAR1"))
	other := writeParquet(t, dir, "o/x.parquet", []struct {
		Text string `parquet:"text"`
	}{{"hello"}})
	fewVal := t.TempDir()
	writeParquet(t, fewVal, "train.parquet", faces(t, 0, 3))
	writeParquet(t, fewVal, "validation.parquet", faces(t, 3, 2))
	mixed := t.TempDir()
	writeParquet(t, mixed, "x.parquet", faces(t, 0, 3))
	writeFile(t, mixed, "y.png", encodePNG(t, pattern(32, 32, 1)))

	tests := []struct {
		name string
		opt  PrepareOptions
		want string
	}{
		{"gray file as celebahq", PrepareOptions{Source: grayFile, Format: FormatCelebAHQ}, `no binary "image" column`},
		{"damaged file", PrepareOptions{Source: damaged}, "d/train.parquet"},
		{"unknown columns", PrepareOptions{Source: other}, "columns [text]"},
		{"parquet as folder", PrepareOptions{Source: grayFile, Format: FormatFolder}, "wants a folder"},
		{"validation too small", PrepareOptions{Source: fewVal, Val: 2, Test: 1}, "fewer than val+test"},
		{"images and parquet", PrepareOptions{Source: mixed}, "both images"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.Out = t.TempDir()
			tc.opt.ImageSize = 8
			_, err := Prepare(context.Background(), tc.opt)
			if err == nil || !strings.Contains(filepath.ToSlash(err.Error()), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
