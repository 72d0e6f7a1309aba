package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/track"
	"github.com/tinct/tinct/trainstate"
	"github.com/tinct/tinct/worker"
)

// synthetic is a deterministic in-memory training set.
type synthetic struct{ n, size int }

func (s synthetic) Len() int       { return s.n }
func (s synthetic) ImageSize() int { return s.size }
func (s synthetic) Load(i int, color, gray []float32, flip bool) error {
	hw := s.size * s.size
	for p := range hw {
		x := p % s.size
		if flip {
			x = s.size - 1 - x
		}
		y := p / s.size
		r := float32(math.Sin(float64(i)*0.37 + float64(x)*0.5))
		g := float32(math.Cos(float64(i)*0.21 + float64(y)*0.3))
		b := float32(math.Sin(float64(x*y) * 0.05))
		color[p], color[hw+p], color[2*hw+p] = r, g, b
		gray[p] = 0.299*r + 0.587*g + 0.114*b
	}
	return nil
}

var data = synthetic{n: 10, size: 8}

func quiet() *slog.Logger {
	if os.Getenv("TINCT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(t *testing.T, store string, extra ...string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(nil, append([]string{"model.widths=[4,8]", "image_size=8", "batch_size=4", "epochs=3", "lr=0.001",
		"sample_every=0", "checkpoint_every=1", "keep_last=0", "snapshot_every=1", "steps_in_flight=1", "seed=7", "store=" + store, "dataset=unused"}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// local is a single-machine run: the coordinator with in-process members.
type local struct {
	co      *coordinator.Coordinator
	st      *trainstate.State
	members []*worker.Member
}

func startLocal(t *testing.T, cfg *config.Config, opt coordinator.Options, resume bool, members int) *local {
	t.Helper()
	store, err := checkpoint.Open(cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	st, err := trainstate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if resume {
		ok, err := coordinator.Resume(context.Background(), store, st, quiet())
		if err != nil || !ok {
			t.Fatalf("resume: %v %v", ok, err)
		}
	}
	var ms []*worker.Member
	var cms []coordinator.Member
	for i := range members {
		w, err := worker.New(fmt.Sprint("w", i), cfg.ModelConfig(), data)
		if err != nil {
			t.Fatal(err)
		}
		m := &worker.Member{W: w, RingListen: "127.0.0.1:0", Secret: []byte("s"), Log: quiet()}
		t.Cleanup(m.Close)
		ms = append(ms, m)
		cms = append(cms, m)
	}
	opt.State, opt.Saved, opt.Train, opt.Transport = st, resume, data, coordinator.NewLocal(cms...)
	if opt.Store == nil {
		opt.Store = store
	}
	if opt.Log == nil {
		opt.Log = quiet()
	}
	co, err := coordinator.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	return &local{co: co, st: st, members: ms}
}

func sameBits(t *testing.T, what string, a, b []float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d vs %d values", what, len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s[%d]: %g vs %g", what, i, a[i], b[i])
		}
	}
}

func sameState(t *testing.T, a, b *trainstate.State) {
	t.Helper()
	sameBits(t, "weights", a.Net.Params, b.Net.Params)
	sameBits(t, "ema", a.EMA.Params, b.EMA.Params)
	sameBits(t, "adam.m", a.Adam.M, b.Adam.M)
	sameBits(t, "adam.v", a.Adam.V, b.Adam.V)
	sameBits(t, "bn", a.Net.Buffers(nil), b.Net.Buffers(nil))
	if a.Net.BatchesTracked() != b.Net.BatchesTracked() || a.Adam.Step != b.Adam.Step || a.Pos != b.Pos {
		t.Fatalf("counters differ: %+v vs %+v", a.Pos, b.Pos)
	}
}

// TestExactResume: a run interrupted mid-epoch and resumed from its
// checkpoint ends bitwise identical to an uninterrupted run.
func TestExactResume(t *testing.T) {
	full := startLocal(t, testConfig(t, t.TempDir()), coordinator.Options{}, false, 1)
	if err := full.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if full.co.Step() != 6 || full.co.Epoch() != 3 {
		t.Fatalf("uninterrupted run ended at step %d epoch %d, want 6 and 3", full.co.Step(), full.co.Epoch())
	}
	for _, stopAt := range []int64{1, 2, 3, 5} { // mid-epoch and at epoch boundaries (2 steps per epoch)
		t.Run(fmt.Sprint("stop after step ", stopAt), func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			ctx, cancel := context.WithCancel(context.Background())
			first := startLocal(t, cfg, coordinator.Options{AfterStep: func(step int64) {
				if step == stopAt {
					cancel()
				}
			}}, false, 1)
			if err := first.co.Run(ctx); !errors.Is(err, coordinator.ErrInterrupted) {
				t.Fatalf("interrupted run: %v", err)
			}
			if first.co.Step() != stopAt {
				t.Fatalf("stopped at step %d, want %d", first.co.Step(), stopAt)
			}
			resumed := startLocal(t, cfg, coordinator.Options{}, true, 1)
			if resumed.co.Step() != stopAt {
				t.Fatalf("resumed at step %d, want %d", resumed.co.Step(), stopAt)
			}
			if err := resumed.co.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameState(t, full.st, resumed.st)
		})
	}
}

// TestLocalRingMatchesMaster: two in-process members on one ring (each on
// half of every batch) keep replicas bitwise equal to the committed state;
// one member's run is not bitwise the same (BatchNorm sees half batches) but
// stays close.
func TestLocalRingMatchesMaster(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=1")
	two := startLocal(t, cfg, coordinator.Options{}, false, 2)
	if err := two.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, m := range two.members {
		sameBits(t, m.Name(), two.st.Net.Params, m.W.Params())
		if got, want := m.W.Checksum(), cluster.Checksum(two.st.Net); string(got) != string(want) {
			t.Fatalf("%s: checksum differs from the committed state", m.Name())
		}
	}
	one := startLocal(t, testConfig(t, t.TempDir(), "epochs=1"), coordinator.Options{}, false, 1)
	if err := one.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i, v := range one.st.Net.Params {
		worst = math.Max(worst, math.Abs(float64(v-two.st.Net.Params[i])))
	}
	if worst == 0 || worst > 0.01 {
		t.Errorf("one vs two members: largest weight difference %g (want small but non-zero: BatchNorm statistics are per share)", worst)
	}
}

// TestResumeSkipsTruncatedCheckpoint: when the newest checkpoint is cut
// short, resume reports it and continues from the previous valid one.
func TestResumeSkipsTruncatedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	first := startLocal(t, cfg, coordinator.Options{}, false, 1)
	if err := first.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// checkpoints after epochs 1, 2, 3 = steps 2, 4, 6; cut the newest
	part := filepath.Join(dir, "step-000000006", "weights.safetensors")
	fi, err := os.Stat(part)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(part, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	store, _ := checkpoint.Open(dir)
	st, _ := trainstate.New(cfg)
	ok, err := coordinator.Resume(context.Background(), store, st, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || !ok {
		t.Fatalf("resume: %v %v", ok, err)
	}
	if st.Pos.Step != 4 || st.Pos.Epoch != 2 {
		t.Fatalf("resumed at step %d epoch %d, want the previous checkpoint (step 4, epoch 2)", st.Pos.Step, st.Pos.Epoch)
	}
	if !strings.Contains(logs.String(), "weights.safetensors") {
		t.Fatalf("the skipped checkpoint was not reported:\n%s", logs.String())
	}
}

func TestMetrics(t *testing.T) {
	reg := track.NewRegistry()
	l := startLocal(t, testConfig(t, t.TempDir()), coordinator.Options{Metrics: reg}, false, 1)
	if err := l.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"tinct_step": 6, "tinct_workers": 1, "tinct_checkpoints_total": 3, "tinct_epoch": 3} {
		if got := reg.Gauge(name, "").Value(); got != want {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
	if l := reg.Gauge("tinct_loss", "").Value(); !(l > 0) {
		t.Errorf("tinct_loss = %g", l)
	}
}

// TestResumeNoValidCheckpoint: when every checkpoint in the store is
// damaged, Resume fails naming the store and each checkpoint's problem,
// rather than reporting an empty store (which would start afresh); an
// empty store is reported as such, without an error.
func TestResumeNoValidCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	first := startLocal(t, cfg, coordinator.Options{}, false, 1)
	if err := first.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	names := []string{"step-000000002", "step-000000004", "step-000000006"}
	for _, name := range names {
		part := filepath.Join(dir, name, "ema.safetensors")
		b, err := os.ReadFile(part)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		if err := os.WriteFile(part, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, _ := checkpoint.Open(dir)
	st, _ := trainstate.New(cfg)
	ok, err := coordinator.Resume(context.Background(), store, st, quiet())
	if ok || err == nil {
		t.Fatalf("resume from a store of damaged checkpoints: %v %v, want an error", ok, err)
	}
	for _, want := range append([]string{store.String()}, names...) {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("resume: %v\nwant it to name %s", err, want)
		}
	}
	if !strings.Contains(err.Error(), "ema.safetensors: sha256 mismatch") {
		t.Errorf("resume: %v\nwant it to say what is wrong", err)
	}

	empty, _ := checkpoint.Open(t.TempDir())
	if ok, err := coordinator.Resume(context.Background(), empty, st, quiet()); ok || err != nil {
		t.Fatalf("resume from an empty store: %v %v, want false and no error", ok, err)
	}
}

// TestResumeNewestDespiteLatestPointer: a coordinator killed after a
// checkpoint was complete but before the latest pointer moved resumes from
// that checkpoint, not from the one the pointer still names.
func TestResumeNewestDespiteLatestPointer(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	first := startLocal(t, cfg, coordinator.Options{}, false, 1)
	if err := first.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// the state of the store between the checkpoint's rename and the
	// pointer's update
	if err := os.WriteFile(filepath.Join(dir, "latest"), []byte("step-000000004\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resumed := startLocal(t, cfg, coordinator.Options{}, true, 1)
	if resumed.co.Step() != 6 || resumed.co.Epoch() != 3 {
		t.Fatalf("resumed at step %d epoch %d, want the newest checkpoint (step 6, epoch 3)", resumed.co.Step(), resumed.co.Epoch())
	}
	sameState(t, first.st, resumed.st)
}

// metricsLine reports whether the run directory's metrics.jsonl, as it is
// on disk, holds a line for tag at step.
func metricsLine(t *testing.T, dir, tag string, step int64) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), fmt.Sprintf(`"tag":%q,"step":%d,`, tag, step))
}

// TestMetricsFlushedAtEpochEnd: the epoch's loss is in metrics.jsonl on
// disk once the epoch has ended, without closing the writer, so that a
// crash does not lose it.
func TestMetricsFlushedAtEpochEnd(t *testing.T) {
	dir := t.TempDir()
	w, err := track.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	seen := map[int64]bool{}
	l := startLocal(t, testConfig(t, t.TempDir(), "checkpoint_every=0"), coordinator.Options{Track: w, AfterStep: func(step int64) {
		if step == 3 || step == 5 { // the first steps of epochs 2 and 3 (2 steps an epoch)
			seen[step] = metricsLine(t, dir, "loss/epoch", (step-1)/2)
		}
	}}, false, 1)
	if err := l.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !seen[3] || !seen[5] {
		t.Errorf("loss/epoch of epochs 1 and 2 on disk at the next epoch's first step: %v %v, want both", seen[3], seen[5])
	}
	if !metricsLine(t, dir, "loss/epoch", 3) || !metricsLine(t, dir, "loss/step", 6) {
		t.Error("the last epoch's metrics are not on disk when Run returns")
	}
}

// savingStore calls before ahead of every Save.
type savingStore struct {
	checkpoint.Store
	before func()
}

func (s savingStore) Save(ctx context.Context, c *checkpoint.Checkpoint) error {
	s.before()
	return s.Store.Save(ctx, c)
}

// TestMetricsFlushedAtCheckpoint: every metric up to a checkpoint is on
// disk when the checkpoint is taken (here mid-epoch, on an interrupt).
func TestMetricsFlushedAtCheckpoint(t *testing.T) {
	dir := t.TempDir()
	w, err := track.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg := testConfig(t, t.TempDir())
	store, err := checkpoint.Open(cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	saves, flushed := 0, 0
	l := startLocal(t, cfg, coordinator.Options{Track: w, Store: savingStore{store, func() {
		saves++
		if metricsLine(t, dir, "loss/step", 1) {
			flushed++
		}
	}}, AfterStep: func(step int64) {
		if step == 1 {
			cancel()
		}
	}}, false, 1)
	if err := l.co.Run(ctx); !errors.Is(err, coordinator.ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	if saves != 1 || flushed != 1 {
		t.Fatalf("%d checkpoints, %d of them with step 1's loss on disk; want 1 and 1", saves, flushed)
	}
}

// TestSampleGridKeepsLuminance: the grid's generated row carries the gray
// row's own luminance (within a level or two of BT.601 rounding) unless
// sample_color is raw, which shows the network's RGB as sampled.
func TestSampleGridKeepsLuminance(t *testing.T) {
	for _, tc := range []struct {
		color string
		kept  bool
	}{{"luminance", true}, {"raw", false}} {
		t.Run(tc.color, func(t *testing.T) {
			dir := t.TempDir()
			w, err := track.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			cfg := testConfig(t, t.TempDir(), "checkpoint_every=0", "epochs=1", "sample_every=1", "sample_images=2", "sample_steps=3", "sample_color="+tc.color)
			l := startLocal(t, cfg, coordinator.Options{Track: w, Val: data}, false, 1)
			if err := l.co.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			matches, _ := filepath.Glob(filepath.Join(dir, "images", "samples*.png"))
			if len(matches) != 1 {
				t.Fatalf("grids %v, want one", matches)
			}
			f, err := os.Open(matches[0])
			if err != nil {
				t.Fatal(err)
			}
			grid, err := png.Decode(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			const s, pad = 8, 2
			worst := 0.0
			for i := range 2 {
				for y := range s {
					for x := range s {
						gx := i*(s+pad) + x
						gr, _, _, _ := grid.At(gx, y).RGBA()
						r, g, b, _ := grid.At(gx, s+pad+y).RGBA()
						lum := 0.299*float64(r>>8) + 0.587*float64(g>>8) + 0.114*float64(b>>8)
						worst = math.Max(worst, math.Abs(lum-float64(gr>>8)))
					}
				}
			}
			if tc.kept && worst > 2 {
				t.Errorf("generated row's luminance is up to %.1f levels off the gray row's", worst)
			}
			if !tc.kept && worst < 5 {
				t.Errorf("raw samples have the gray row's luminance (worst %.1f): not raw", worst)
			}
		})
	}
}

// TestInterruptDoesNotReformRing: an interrupted run gives up its steps in
// flight without warning that the ring is re-formed: it stops.
func TestInterruptDoesNotReformRing(t *testing.T) {
	var logs strings.Builder
	ctx, cancel := context.WithCancel(context.Background())
	l := startLocal(t, testConfig(t, t.TempDir(), "steps_in_flight=4", "snapshot_every=4"), coordinator.Options{Log: slog.New(slog.NewTextHandler(&logs, nil)), AfterStep: func(step int64) {
		if step == 1 {
			cancel()
		}
	}}, false, 1)
	if err := l.co.Run(ctx); !errors.Is(err, coordinator.ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	if strings.Contains(logs.String(), "re-formed") {
		t.Errorf("an interrupted run says the ring is re-formed:\n%s", logs.String())
	}
}
