package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/track"
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

func testConfig(t *testing.T, store string, extra ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load("", append([]string{"model.widths=[4,8]", "image_size=8", "batch_size=4", "epochs=3", "lr=0.001",
		"sample_every=0", "checkpoint_every=1", "keep_last=0", "seed=7", "store=" + store, "dataset=unused"}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func start(t *testing.T, cfg *config.Config, afterStep func(int64), resume bool) *Coordinator {
	t.Helper()
	store, err := checkpoint.Open(cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	data := synthetic{n: 10, size: 8}
	co, err := New(Options{Config: cfg, Train: data, Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AfterStep: afterStep})
	if err != nil {
		t.Fatal(err)
	}
	if resume {
		ok, err := co.Resume(context.Background())
		if err != nil || !ok {
			t.Fatalf("resume: %v %v", ok, err)
		}
	}
	w, err := worker.New("w0", co.Net().Config, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := co.Join(context.Background(), Local{W: w}); err != nil {
		t.Fatal(err)
	}
	return co
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

// TestExactResume: a run interrupted mid-epoch and resumed from its
// checkpoint ends bitwise identical to an uninterrupted run.
func TestExactResume(t *testing.T) {
	for _, stopAt := range []int64{1, 2, 3, 5} { // mid-epoch and at epoch boundaries (2 steps per epoch)
		t.Run(fmt.Sprint("stop after step ", stopAt), func(t *testing.T) {
			full := start(t, testConfig(t, t.TempDir()), nil, false)
			if err := full.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if full.Step() != 6 || full.Epoch() != 3 {
				t.Fatalf("uninterrupted run ended at step %d epoch %d, want 6 and 3", full.Step(), full.Epoch())
			}

			cfg := testConfig(t, t.TempDir())
			ctx, cancel := context.WithCancel(context.Background())
			first := start(t, cfg, func(step int64) {
				if step == stopAt {
					cancel()
				}
			}, false)
			if err := first.Run(ctx); !errors.Is(err, ErrInterrupted) {
				t.Fatalf("interrupted run: %v", err)
			}
			if first.Step() != stopAt {
				t.Fatalf("stopped at step %d, want %d", first.Step(), stopAt)
			}
			resumed := start(t, cfg, nil, true)
			if resumed.Step() != stopAt {
				t.Fatalf("resumed at step %d, want %d", resumed.Step(), stopAt)
			}
			if err := resumed.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameBits(t, "weights", full.Net().Params, resumed.Net().Params)
			sameBits(t, "ema", full.EMA().Params, resumed.EMA().Params)
			sameBits(t, "adam.m", full.Optimizer().M, resumed.Optimizer().M)
			sameBits(t, "adam.v", full.Optimizer().V, resumed.Optimizer().V)
			sameBits(t, "bn", full.Net().Buffers(nil), resumed.Net().Buffers(nil))
			if full.Net().BatchesTracked() != resumed.Net().BatchesTracked() || full.Optimizer().Step != resumed.Optimizer().Step {
				t.Fatal("counters differ")
			}
		})
	}
}

// TestTwoWorkersMatchOne: two in-process workers, each on half of every
// batch, commit nearly the same update as one worker on the whole batch
// (BatchNorm sees half batches, so statistics differ; a tiny network trained
// for a few steps stays close).
func TestWorkersShareBatches(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=1")
	co := start(t, cfg, nil, false)
	w2, _ := worker.New("w1", co.Net().Config, synthetic{n: 10, size: 8})
	if err := co.Join(context.Background(), Local{W: w2}); err != nil {
		t.Fatal(err)
	}
	if got := co.Peers(); len(got) != 2 {
		t.Fatalf("peers %v", got)
	}
	if err := co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// every replica applied the same update as the coordinator
	for _, p := range co.peers {
		sameBits(t, p.Name(), co.Net().Params, p.(Local).W.Params())
	}
}

func TestSplit(t *testing.T) {
	idx := []int{0, 1, 2, 3, 4, 5, 6}
	got := split(idx, 3)
	if len(got[0])+len(got[1])+len(got[2]) != 7 || len(got[0]) != 2 || len(got[2]) != 3 {
		t.Fatalf("split %v", got)
	}
}

// TestResumeSkipsTruncatedCheckpoint: when the newest checkpoint is cut
// short, resume reports it and continues from the previous valid one.
func TestResumeSkipsTruncatedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	first := start(t, cfg, nil, false)
	if err := first.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// checkpoints after epochs 1, 2, 3 = steps 2, 4, 6; cut the newest
	part := filepath.Join(dir, "step-000000006", "weights.safetensors")
	st, err := os.Stat(part)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(part, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	store, _ := checkpoint.Open(dir)
	co, err := New(Options{Config: cfg, Train: synthetic{n: 10, size: 8}, Store: store, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := co.Resume(context.Background())
	if err != nil || !ok {
		t.Fatalf("resume: %v %v", ok, err)
	}
	if co.Step() != 4 || co.Epoch() != 2 {
		t.Fatalf("resumed at step %d epoch %d, want the previous checkpoint (step 4, epoch 2)", co.Step(), co.Epoch())
	}
	if !strings.Contains(logs.String(), "weights.safetensors") {
		t.Fatalf("the skipped checkpoint was not reported:\n%s", logs.String())
	}
}

func TestMetrics(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	store, _ := checkpoint.Open(cfg.Store)
	reg := track.NewRegistry()
	data := synthetic{n: 10, size: 8}
	co, err := New(Options{Config: cfg, Train: data, Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := worker.New("w0", co.Net().Config, data)
	co.Join(context.Background(), Local{W: w})
	if err := co.Run(context.Background()); err != nil {
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
