package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinct/tinct/dataset"
)

// TestLogSkips: the log names the first 10 skipped items with their reason
// and points to the prepared set's skipped.txt for the rest.
func TestLogSkips(t *testing.T) {
	sum := dataset.Summary{Out: "/data/set"}
	for i := range 12 {
		sum.Skips = append(sum.Skips, dataset.Skip{Path: fmt.Sprintf("/photos/p%02d.jpg", i), Reason: dataset.SkipUndecodable})
	}
	var logs strings.Builder
	logSkips(slog.New(slog.NewTextHandler(&logs, nil)), sum)
	for i := range 12 {
		line := fmt.Sprintf("file=/photos/p%02d.jpg reason=undecodable", i)
		if got := strings.Contains(logs.String(), line); got != (i < 10) {
			t.Errorf("log has %q: %v, want %v", line, got, i < 10)
		}
	}
	for _, want := range []string{"more=2", "/data/set/skipped.txt"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	logs.Reset()
	logSkips(slog.New(slog.NewTextHandler(&logs, nil)), dataset.Summary{Out: "/data/set"})
	if logs.Len() != 0 {
		t.Errorf("nothing skipped, yet the log says:\n%s", logs.String())
	}
}

// TestDataPrepareListsSkipped: tinct data prepare lists the skipped files in
// skipped.txt and says so; a file that is not an image (a NOTICE.md beside
// the photos) is ignored, not counted as a bad image.
func TestDataPrepareListsSkipped(t *testing.T) {
	src := photos(t, 6)
	if err := os.WriteFile(filepath.Join(src, "NOTICE.md"), []byte("# photos by …"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "data")
	o, err := run(t, "data", "prepare", src, "--out", out, "--image-size", "16", "--val", "1", "--test", "1")
	if err != nil {
		t.Fatalf("prepare: %v\n%s", err, o)
	}
	list := filepath.Join(out, dataset.SkippedFile)
	b, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(src, "broken.jpg") + "\tundecodable\n"; string(b) != want {
		t.Errorf("%s = %q, want %q", list, b, want)
	}
	for _, want := range []string{"skipped 1 (listed in " + list + ")", "ignored 1"} {
		if !strings.Contains(o, want) {
			t.Errorf("output %q lacks %q", o, want)
		}
	}
	if strings.Contains(o, dataset.SkipNotImage) {
		t.Errorf("output %q counts NOTICE.md as a bad image", o)
	}
}

// TestDataPrepareTooFew: with val+test beyond a small folder, tinct data
// prepare says which --val and --test would do, and leaves no --out folder
// behind unless it was there before (then it keeps what it held).
func TestDataPrepareTooFew(t *testing.T) {
	src := photos(t, 23)
	out := filepath.Join(t.TempDir(), "set")
	if _, err := run(t, "data", "prepare", src, "--out", out, "--image-size", "8"); err == nil || !strings.Contains(err.Error(), "pass --val 2 --test 2") {
		t.Errorf("the defaults on 23 photos: %v, want a hint to pass --val 2 --test 2", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the failed prepare left %s (%v)", out, err)
	}
	keep := filepath.Join(out, "keep.txt")
	os.MkdirAll(out, 0o755)
	os.WriteFile(keep, nil, 0o644)
	if _, err := run(t, "data", "prepare", src, "--out", out, "--image-size", "8"); err == nil {
		t.Fatal("prepared with val+test 2000 of 23")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a failed prepare took what the folder held: %v", err)
	}
	if o, err := run(t, "data", "prepare", src, "--out", out, "--image-size", "8", "--val", "2", "--test", "2"); err != nil {
		t.Errorf("with the suggested --val 2 --test 2: %v\n%s", err, o)
	}
}

// TestPrepareResultReadable: the line tinct data prepare prints counts the
// skipped files by reason in words, not as a Go map.
func TestPrepareResultReadable(t *testing.T) {
	sum := dataset.Summary{Out: "/set", Skipped: map[string]int{dataset.SkipUndecodable: 1, dataset.SkipTooSmall: 2}, Skips: make([]dataset.Skip, 3)}
	got := prepareResult(sum)
	if strings.Contains(got, "map[") || !strings.Contains(got, "2 "+dataset.SkipTooSmall) {
		t.Errorf("prepareResult = %q", got)
	}
}
