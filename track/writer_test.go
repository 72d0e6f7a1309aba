package track

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Writer and Progress.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)}
}

func TestWriterRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	w.now = clock.now

	scalars := []struct {
		tag   string
		step  int64
		value float64
	}{
		{"loss/step", 1, 0.5},
		{"loss/step", 2, 0.25},
		{"loss/epoch", 2, 0}, // a zero must still be stored
		{"images_per_sec", 3, 45.6},
	}
	for _, s := range scalars {
		if err := w.Scalar(s.tag, s.step, s.value); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
	}
	gray := image.NewGray(image.Rect(0, 0, 5, 3))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 10)
	}
	rgb := image.NewRGBA(image.Rect(0, 0, 4, 6))
	for y := range 6 {
		for x := range 4 {
			rgb.Set(x, y, color.RGBA{uint8(40 * x), uint8(40 * y), 7, 255})
		}
	}
	if err := w.Image("samples/gray", 10, gray); err != nil {
		t.Fatal(err)
	}
	if err := w.Image("samples/rgb", 10, rgb); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	base := filepath.Base(w.eventsPath)
	host, _ := os.Hostname()
	if !strings.HasPrefix(base, "events.out.tfevents.") || !strings.Contains(base, host) || filepath.Dir(w.eventsPath) != dir {
		t.Errorf("event file %s", w.eventsPath)
	}
	events, err := ReadEvents(w.eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1+len(scalars)+2 {
		t.Fatalf("%d events, want %d", len(events), 1+len(scalars)+2)
	}
	if events[0].FileVersion != "brain.Event:2" {
		t.Errorf("first event %+v", events[0])
	}
	wall0 := wallTime(newClock().t)
	for i, s := range scalars {
		ev := events[1+i]
		v, ok := ev.Scalars[s.tag]
		if !ok || v != float64(float32(s.value)) || ev.Step != s.step || len(ev.Scalars) != 1 {
			t.Errorf("event %d = %+v, want %s=%v at step %d", 1+i, ev, s.tag, s.value, s.step)
		}
		if math.Abs(ev.WallTime-(wall0+float64(i))) > 1e-6 {
			t.Errorf("event %d wall time %f, want %f", 1+i, ev.WallTime, wall0+float64(i))
		}
	}
	for i, want := range []struct {
		tag        string
		img        image.Image
		colorspace int
	}{{"samples/gray", gray, 1}, {"samples/rgb", rgb, 3}} {
		ev := events[1+len(scalars)+i]
		im, ok := ev.Images[want.tag]
		b := want.img.Bounds()
		if !ok || ev.Step != 10 || im.Width != b.Dx() || im.Height != b.Dy() || im.Colorspace != want.colorspace {
			t.Fatalf("image event %+v, want %s %dx%d colorspace %d", ev, want.tag, b.Dx(), b.Dy(), want.colorspace)
		}
		decoded := decodePNG(t, im.PNG)
		assertSamePixels(t, want.tag+" (event file)", decoded, want.img)
		file, err := os.ReadFile(filepath.Join(dir, "images", imageFileName(want.tag, 10)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(file, im.PNG) {
			t.Errorf("%s: PNG file differs from the event's", want.tag)
		}
	}
}

func decodePNG(t *testing.T, data []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode PNG: %v", err)
	}
	return img
}

func assertSamePixels(t *testing.T, name string, got, want image.Image) {
	t.Helper()
	if got.Bounds().Size() != want.Bounds().Size() {
		t.Fatalf("%s: size %v, want %v", name, got.Bounds().Size(), want.Bounds().Size())
	}
	gb, wb := got.Bounds(), want.Bounds()
	for y := range wb.Dy() {
		for x := range wb.Dx() {
			g := color.NRGBAModel.Convert(got.At(gb.Min.X+x, gb.Min.Y+y))
			w := color.NRGBAModel.Convert(want.At(wb.Min.X+x, wb.Min.Y+y))
			if g != w {
				t.Fatalf("%s: pixel (%d,%d) = %v, want %v", name, x, y, g, w)
			}
		}
	}
}

func TestImageFileName(t *testing.T) {
	for _, c := range []struct {
		tag  string
		step int64
		want string
	}{
		{"samples/val", 42, "samples_val-00000042.png"},
		{"a/b/c", 123456789, "a_b_c-123456789.png"},
		{`win\tag`, 0, "win_tag-00000000.png"},
	} {
		if got := imageFileName(c.tag, c.step); got != c.want {
			t.Errorf("imageFileName(%q, %d) = %q, want %q", c.tag, c.step, got, c.want)
		}
	}
}

func TestWriterJSONL(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	for run := range 2 { // a resumed run appends
		w, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		w.now = clock.now
		if err := w.Scalar("loss/step", int64(run), 0.125); err != nil {
			t.Fatal(err)
		}
		if err := w.Scalar("loss/step", 5, math.NaN()); err != nil {
			t.Fatal(err)
		}
		if err := w.Scalar("grad", 5, math.Inf(-1)); err != nil {
			t.Fatal(err)
		}
		if err := w.Image("sample", 7, image.NewGray(image.Rect(0, 0, 2, 2))); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 8 {
		t.Fatalf("%d lines, want 8", len(lines))
	}
	for i, m := range lines {
		ts, _ := m["time"].(string)
		if got, err := time.Parse(time.RFC3339Nano, ts); err != nil || !got.Equal(clock.t) {
			t.Errorf("line %d: time %q (%v), want %v", i, ts, err, clock.t)
		}
	}
	want := []map[string]any{
		{"tag": "loss/step", "step": 0.0, "value": 0.125},
		{"tag": "loss/step", "step": 5.0, "value": "NaN"},
		{"tag": "grad", "step": 5.0, "value": "-Inf"},
		{"tag": "sample", "step": 7.0, "image": "images/sample-00000007.png"},
		{"tag": "loss/step", "step": 1.0, "value": 0.125},
	}
	for i, w := range want {
		got := lines[i]
		for k, v := range w {
			if got[k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, got[k], v)
			}
		}
		if _, ok := got["image"]; ok != (w["image"] != nil) {
			t.Errorf("line %d: image key present %v", i, ok)
		}
		if _, ok := got["value"]; ok != (w["value"] != nil) {
			t.Errorf("line %d: value key present %v", i, ok)
		}
	}
	// Two Opens in the same second got two event files.
	matches, _ := filepath.Glob(filepath.Join(dir, "events.out.tfevents.*"))
	if len(matches) != 2 {
		t.Errorf("event files %v, want 2", matches)
	}
	// ReadMetrics gives back what was written, with a torn last line
	// (a live run's) skipped.
	f2, _ := os.OpenFile(MetricsPath(dir), os.O_APPEND|os.O_WRONLY, 0)
	f2.WriteString(`{"time":"2026-01-01T00:00:00Z","tag":"loss/st`)
	f2.Close()
	var recs []string
	if err := ReadMetrics(context.Background(), dir, func(r Record) {
		if !r.Time.Equal(clock.t) {
			t.Errorf("record %v: time %v", r, r.Time)
		}
		recs = append(recs, fmt.Sprintf("%s@%d=%v%s", r.Tag, r.Step, r.Value, r.Image))
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(recs, " "); got != "loss/step@0=0.125 loss/step@5=NaN grad@5=-Inf sample@7=NaNsample-00000007.png loss/step@1=0.125 loss/step@5=NaN grad@5=-Inf sample@7=NaNsample-00000007.png" {
		t.Errorf("ReadMetrics: %s", got)
	}
}

func TestWriterFlush(t *testing.T) {
	w, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	clock := newClock()
	w.now = clock.now
	w.lastFlush = clock.t

	count := func() int {
		t.Helper()
		events, err := ReadEvents(w.eventsPath)
		if err != nil {
			t.Fatal(err)
		}
		return len(events)
	}
	if n := count(); n != 1 {
		t.Fatalf("after Open: %d events on disk, want the file_version", n)
	}
	w.Scalar("a", 1, 1)
	if n := count(); n != 1 {
		t.Fatalf("buffered write reached the disk: %d events", n)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("after Flush: %d events, want 2", n)
	}
	clock.advance(autoFlushInterval)
	w.Scalar("a", 2, 1) // old enough: flushes by itself
	if n := count(); n != 3 {
		t.Fatalf("after a stale write: %d events, want 3", n)
	}
}

func TestWriterClosedAndInvalid(t *testing.T) {
	w, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Scalar("", 1, 1); err == nil {
		t.Error("empty tag accepted")
	}
	if err := w.Image("x", 1, nil); err == nil {
		t.Error("nil image accepted")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Scalar("a", 1, 1); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Scalar after Close: %v", err)
	}
	if err := w.Image("a", 1, image.NewGray(image.Rect(0, 0, 1, 1))); err == nil {
		t.Error("Image after Close: no error")
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush after Close: no error")
	}
}

func TestWriterConcurrent(t *testing.T) {
	w, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				if err := w.Scalar("g", int64(g*100+i), float64(i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	events, err := ReadEvents(w.eventsPath)
	if err != nil || len(events) != 201 {
		t.Fatalf("%d events, err %v; want 201", len(events), err)
	}
}
