package track

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Names inside a run directory.
const (
	metricsFile     = "metrics.jsonl"
	imagesDir       = "images"
	eventFilePrefix = "events.out.tfevents."
)

// autoFlushInterval is how stale buffered records may get: a write that comes
// this long after the last flush flushes.
const autoFlushInterval = 5 * time.Second

// Writer records a training run into a directory: scalars and images go to
// metrics.jsonl and to a TensorBoard event file, images also to PNG files
// (see the package documentation for the formats).
//
// Writes are buffered. They reach the files at Flush, at Close, and at the
// first write more than a few seconds after the previous flush, so that
// TensorBoard and tail -f see a live run. A Writer is safe for concurrent use.
type Writer struct {
	dir        string
	eventsPath string
	now        func() time.Time // the clock; tests replace it

	mu         sync.Mutex
	events     *os.File
	eventsBuf  *bufio.Writer
	metrics    *os.File
	metricsBuf *bufio.Writer
	lastFlush  time.Time
	closed     bool
}

// Open creates dir if needed and starts recording into it: it appends to
// dir/metrics.jsonl and creates a new event file
// dir/events.out.tfevents.<unix seconds>.<hostname> (with a ".N" suffix if
// that name is taken), whose first record, the file_version, it writes at
// once.
func Open(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("track: open: %w", err)
	}
	now := time.Now()
	metrics, err := os.OpenFile(MetricsPath(dir), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("track: open: %w", err)
	}
	events, err := createEventFile(dir, now)
	if err != nil {
		metrics.Close()
		return nil, fmt.Errorf("track: open: %w", err)
	}
	w := &Writer{
		dir:        dir,
		eventsPath: events.Name(),
		now:        time.Now,
		events:     events,
		eventsBuf:  bufio.NewWriterSize(events, 64<<10),
		metrics:    metrics,
		metricsBuf: bufio.NewWriterSize(metrics, 16<<10),
		lastFlush:  now,
	}
	// A bufio.Writer keeps its first error, so the flush reports the write's.
	w.eventsBuf.Write(appendRecord(nil, encodeFileVersionEvent(wallTime(now), fileVersion)))
	if err := w.flushLocked(); err != nil {
		events.Close()
		metrics.Close()
		return nil, fmt.Errorf("track: open: %w", err)
	}
	return w, nil
}

// createEventFile creates a new, empty event file in dir, named as
// TensorFlow names them.
func createEventFile(dir string, now time.Time) (*os.File, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	host = strings.ReplaceAll(host, string(filepath.Separator), "_")
	base := filepath.Join(dir, eventFilePrefix+strconv.FormatInt(now.Unix(), 10)+"."+host)
	name := base
	for i := 1; ; i++ {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrExist) || i == 1000 {
			return nil, err
		}
		// TensorBoard reads any file whose name contains "tfevents".
		name = base + "." + strconv.Itoa(i)
	}
}

// Scalar records value for tag at step. The event file stores it as a
// float32 (TensorBoard's simple_value); metrics.jsonl keeps the float64.
func (w *Writer) Scalar(tag string, step int64, value float64) error {
	if tag == "" {
		return fmt.Errorf("track: scalar at step %d: empty tag", step)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.now()
	v := jsonFloat(value)
	err := w.writeLocked(t,
		encodeSummaryEvent(wallTime(t), step, encodeScalarValue(tag, float32(value))),
		jsonLine{Tag: tag, Step: step, Value: &v})
	if err != nil {
		return fmt.Errorf("track: scalar %q at step %d: %w", tag, step, err)
	}
	return nil
}

// Image records img for tag at step: it writes the PNG to
// dir/images/<tag>-<step>.png (tag's "/" and "\" replaced by "_", step as at
// least 8 digits), then the event-file and metrics.jsonl records, which come
// after the file so that they never name a missing image. Gray images
// (*image.Gray, *image.Gray16) are stored as gray, others as RGB, or RGBA if
// they have transparent pixels.
func (w *Writer) Image(tag string, step int64, img image.Image) error {
	if err := w.image(tag, step, img); err != nil {
		return fmt.Errorf("track: image %q at step %d: %w", tag, step, err)
	}
	return nil
}

func (w *Writer) image(tag string, step int64, img image.Image) error {
	if tag == "" {
		return errors.New("empty tag")
	}
	if img == nil || img.Bounds().Empty() {
		return errors.New("empty image")
	}
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return errClosed
	}

	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encode PNG: %w", err)
	}
	name := imageFileName(tag, step)
	if err := os.MkdirAll(ImagesPath(w.dir), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(ImagesPath(w.dir), name), buf.Bytes()); err != nil {
		return err
	}

	b := img.Bounds()
	value := encodeImageValue(tag, b.Dy(), b.Dx(), colorspace(img), buf.Bytes())
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.now()
	return w.writeLocked(t, encodeSummaryEvent(wallTime(t), step, value),
		jsonLine{Tag: tag, Step: step, Image: path.Join(imagesDir, name)})
}

// imageFileName is the name, inside dir/images, of the file Image writes for
// tag at step: "samples/val" at step 42 is "samples_val-00000042.png".
func imageFileName(tag string, step int64) string {
	safe := strings.NewReplacer("/", "_", `\`, "_").Replace(tag)
	return fmt.Sprintf("%s-%08d.png", safe, step)
}

// colorspace returns the Summary.Image colorspace matching how image/png
// encodes img.
func colorspace(img image.Image) int {
	switch img.(type) {
	case *image.Gray, *image.Gray16:
		return colorspaceGray
	}
	if isOpaque(img) {
		return colorspaceRGB
	}
	return colorspaceRGBA
}

func isOpaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if _, _, _, a := img.At(x, y).RGBA(); a != 0xffff {
				return false
			}
		}
	}
	return true
}

var errClosed = errors.New("writer is closed")

// writeLocked appends an event record and a metrics line stamped t, then
// flushes if the last flush is older than autoFlushInterval.
func (w *Writer) writeLocked(t time.Time, event []byte, line jsonLine) error {
	if w.closed {
		return errClosed
	}
	line.Time = t.Format(time.RFC3339Nano)
	js, err := json.Marshal(line)
	if err != nil {
		return err
	}
	if _, err := w.eventsBuf.Write(appendRecord(nil, event)); err != nil {
		return fmt.Errorf("write %s: %w", w.eventsPath, err)
	}
	if _, err := w.metricsBuf.Write(append(js, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", w.metrics.Name(), err)
	}
	if t.Sub(w.lastFlush) >= autoFlushInterval {
		return w.flushLocked()
	}
	return nil
}

// Flush writes buffered records to the files.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("track: flush: %w", errClosed)
	}
	if err := w.flushLocked(); err != nil {
		return fmt.Errorf("track: flush: %w", err)
	}
	return nil
}

func (w *Writer) flushLocked() error {
	w.lastFlush = w.now()
	var errs []error
	if err := w.eventsBuf.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("write %s: %w", w.eventsPath, err))
	}
	if err := w.metricsBuf.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("write %s: %w", w.metrics.Name(), err))
	}
	return errors.Join(errs...)
}

// Close flushes, syncs and closes the files. Closing a closed Writer does
// nothing and returns nil.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	errs := []error{w.flushLocked()}
	for _, f := range []*os.File{w.events, w.metrics} {
		if err := f.Sync(); err != nil {
			errs = append(errs, err)
		}
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("track: close: %w", err)
	}
	return nil
}

// wallTime is t as an Event's wall_time: seconds since the epoch.
func wallTime(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// jsonLine is one line of metrics.jsonl.
type jsonLine struct {
	Time  string     `json:"time"`
	Tag   string     `json:"tag"`
	Step  int64      `json:"step"`
	Value *jsonFloat `json:"value,omitempty"`
	Image string     `json:"image,omitempty"`
}

// jsonFloat is a float64 that encodes NaN and infinities, which JSON numbers
// cannot hold, as the strings "NaN", "+Inf" and "-Inf".
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return json.Marshal(v)
}
