package serve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/track"
)

// maxPlotPoints bounds the points of a plot sent to the page: longer series
// are averaged over buckets of consecutive steps.
const maxPlotPoints = 2000

// runData is the answer of GET /api/run.
type runData struct {
	// Dir is the run's folder relative to --outputs (for --run, its name):
	// never a path of the server's.
	Dir  string `json:"dir"`
	Name string `json:"name"`
	// Config holds a few keys of the run's resolved config.yaml, when readable.
	Config *runConfig `json:"config,omitempty"`
	// LossStep is [step, loss] pairs, averaged over Bucket consecutive
	// steps when the run has more than maxPlotPoints of them.
	LossStep []point `json:"loss_step"`
	Bucket   int     `json:"bucket"`
	// LossEpoch is [epoch, mean loss] pairs.
	LossEpoch    []point `json:"loss_epoch"`
	ImagesPerSec float64 `json:"images_per_sec,omitempty"` // the latest value
	// NonFinite counts loss values that were NaN or infinite (not plotted).
	NonFinite int       `json:"non_finite"`
	Samples   []grid    `json:"samples"` // sample grids, by epoch
	Updated   time.Time `json:"updated"` // the last record's time
	// Message is set, and Dir empty, when there is no run to show yet: it
	// says how to start one.
	Message string `json:"message,omitempty"`
}

// noRun reports that there is no training run to show yet (not an error:
// GET /api/run answers it with 200 and a message).
type noRun struct{ msg string }

func (e *noRun) Error() string { return e.msg }

type runConfig struct {
	Dataset   string  `json:"dataset"`
	ImageSize int     `json:"image_size"`
	BatchSize int     `json:"batch_size"`
	Epochs    int     `json:"epochs"`
	LR        float64 `json:"lr"`
	Widths    []int   `json:"widths"`
}

type point [2]float64

type grid struct {
	Epoch int64  `json:"epoch"`
	URL   string `json:"url"`
}

// runDir returns the run directory to show: Options.RunDir, or the
// subdirectory of Options.OutputsDir whose metrics.jsonl was written last.
func (s *Server) runDir() (string, error) {
	if d := s.opts.RunDir; d != "" {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return "", &apiError{status: http.StatusNotFound, msg: fmt.Sprintf("run directory %s: not found (give --run a run directory, e.g. outputs/2026-01-02_03-04-05)", filepath.Base(d))}
		}
		return d, nil
	}
	base := s.opts.OutputsDir
	if base == "" {
		return "", &noRun{msg: "No training run to show: start tinct serve with --run DIR (a run of tinct train) or --outputs DIR (the newest run in it)."}
	}
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var best string
	var bestTime time.Time
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := os.Stat(track.MetricsPath(filepath.Join(base, e.Name())))
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if t := st.ModTime(); best == "" || t.After(bestTime) || t.Equal(bestTime) && e.Name() > filepath.Base(best) {
			best, bestTime = filepath.Join(base, e.Name()), t
		}
	}
	if best == "" {
		return "", &noRun{msg: fmt.Sprintf("No training run in %s/ yet: start one with tinct train (e.g. tinct train --config configs/sample.yaml), then press Refresh; or start tinct serve with --run DIR.", filepath.Base(base))}
	}
	return best, nil
}

// handleRun answers GET /api/run with the dashboard's data (runData); with
// no run to show, with 200 and only a message saying how to start one.
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	dir, err := s.runDir()
	var none *noRun
	if errors.As(err, &none) {
		writeJSON(w, http.StatusOK, &runData{LossStep: []point{}, LossEpoch: []point{}, Samples: []grid{}, Bucket: 1, Message: none.msg})
		return
	}
	if err == nil {
		var data *runData
		if data, err = readRun(r.Context(), dir); err == nil {
			if s.opts.RunDir == "" {
				if rel, err := filepath.Rel(s.opts.OutputsDir, dir); err == nil {
					data.Dir = filepath.ToSlash(rel)
				}
			}
			writeJSON(w, http.StatusOK, data)
			return
		}
	}
	s.logError(r, err)
	writeError(w, err)
}

// readRun reads a run directory's metrics.jsonl and config.yaml. Lines
// that do not parse (the one being written by a live run, say) are skipped.
// A step logged twice (a run resumed from an earlier checkpoint repeats
// steps) keeps its last value.
func readRun(ctx context.Context, dir string) (*runData, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	data := &runData{Dir: filepath.Base(abs), Name: filepath.Base(abs), LossStep: []point{}, LossEpoch: []point{}, Samples: []grid{}, Bucket: 1}
	if b, err := os.ReadFile(filepath.Join(dir, "config.yaml")); err == nil {
		if c, err := config.Parse(b, nil); err == nil {
			data.Config = &runConfig{Dataset: c.Dataset, ImageSize: c.ImageSize, BatchSize: c.BatchSize, Epochs: c.Epochs, LR: c.LR, Widths: c.Model.Widths}
		}
	}
	steps := map[int64]float64{}
	epochs := map[int64]float64{}
	grids := map[int64]string{}
	err = track.ReadMetrics(ctx, dir, func(r track.Record) {
		if r.Time.After(data.Updated) {
			data.Updated = r.Time
		}
		switch {
		case r.Image != "":
			if r.Tag == "samples" && validImageName(r.Image) {
				grids[r.Step] = "/run/images/" + r.Image
			}
		case r.Tag == "loss/step":
			steps[r.Step] = r.Value
		case r.Tag == "loss/epoch":
			epochs[r.Step] = r.Value
		case r.Tag == "images_per_sec" && !math.IsNaN(r.Value) && !math.IsInf(r.Value, 0):
			data.ImagesPerSec = r.Value
		}
	})
	if errors.Is(err, fs.ErrNotExist) {
		return data, nil // a run that has not logged yet
	}
	if err != nil {
		return nil, err
	}
	var nonFinite int
	data.LossStep, nonFinite = series(steps)
	data.NonFinite += nonFinite
	data.LossEpoch, nonFinite = series(epochs)
	data.NonFinite += nonFinite
	if n := len(data.LossStep); n > maxPlotPoints {
		data.Bucket = (n + maxPlotPoints - 1) / maxPlotPoints
		data.LossStep = bucketMeans(data.LossStep, data.Bucket)
	}
	for _, e := range slices.Sorted(maps.Keys(grids)) {
		data.Samples = append(data.Samples, grid{Epoch: e, URL: grids[e]})
	}
	return data, nil
}

// series sorts the finite values of m by key and counts the others.
func series(m map[int64]float64) ([]point, int) {
	out := make([]point, 0, len(m))
	bad := 0
	for k, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad++
			continue
		}
		out = append(out, point{float64(k), v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out, bad
}

// bucketMeans averages every k consecutive points, each placed at its
// bucket's last x.
func bucketMeans(p []point, k int) []point {
	out := make([]point, 0, (len(p)+k-1)/k)
	for i := 0; i < len(p); i += k {
		b := p[i:min(i+k, len(p))]
		sum := 0.0
		for _, q := range b {
			sum += q[1]
		}
		out = append(out, point{b[len(b)-1][0], sum / float64(len(b))})
	}
	return out
}

// imageName is what /run/images/{file} serves: a PNG file name, no path.
var imageName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.png$`)

func validImageName(name string) bool { return imageName.MatchString(name) && path.Base(name) == name }

// handleRunImage answers GET /run/images/{file} with a PNG from the run's
// images/ folder. Only plain PNG names are served, and the file is opened
// through an os.Root on that folder, so neither "..", nor an encoded slash,
// nor a symbolic link can reach anything outside it.
func (s *Server) handleRunImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if !validImageName(name) {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no such image"})
		return
	}
	dir, err := s.runDir()
	if err != nil {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no such image"})
		return
	}
	root, err := os.OpenRoot(track.ImagesPath(dir))
	if err != nil {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no such image"})
		return
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no such image"})
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no such image"})
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, st.ModTime(), f)
}
