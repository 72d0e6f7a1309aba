package track

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Record is one line of a run's metrics.jsonl, as Writer wrote it: a
// scalar (Value; NaN or ±Inf where the file has the strings) or an image
// (Image: its file name in the run's images folder, ImagesPath).
type Record struct {
	Time  time.Time
	Tag   string
	Step  int64
	Value float64
	Image string
}

// MetricsPath is the metrics file of run directory dir.
func MetricsPath(dir string) string { return filepath.Join(dir, metricsFile) }

// ImagesPath is the folder of run directory dir that Writer.Image writes to.
func ImagesPath(dir string) string { return filepath.Join(dir, imagesDir) }

// ReadMetrics calls fn with each record of dir's metrics.jsonl in the
// order written. A line that does not parse (the one a live run is
// writing, say) is skipped. A missing file is an error matching
// fs.ErrNotExist. It stops early when ctx is done.
func ReadMetrics(ctx context.Context, dir string, fn func(Record)) error {
	f, err := os.Open(MetricsPath(dir))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 0; sc.Scan(); n++ {
		if n%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		var l jsonLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil {
			continue
		}
		r := Record{Time: t, Tag: l.Tag, Step: l.Step, Value: math.NaN()}
		if l.Image != "" {
			if r.Image, _ = strings.CutPrefix(l.Image, imagesDir+"/"); r.Image == l.Image {
				continue // not an image of this run's folder
			}
		}
		if l.Value != nil {
			r.Value = float64(*l.Value)
		}
		fn(r)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", MetricsPath(dir), err)
	}
	return nil
}

// UnmarshalJSON reads what MarshalJSON writes: a number, or "NaN", "+Inf"
// or "-Inf".
func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		switch s {
		case "NaN":
			*f = jsonFloat(math.NaN())
		case "+Inf":
			*f = jsonFloat(math.Inf(1))
		case "-Inf":
			*f = jsonFloat(math.Inf(-1))
		default:
			return fmt.Errorf("track: value %q is not a number", s)
		}
		return nil
	}
	return json.Unmarshal(b, (*float64)(f))
}
