package worker

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/trainstate"
)

type synthetic struct{ n, size int }

func (s synthetic) Len() int       { return s.n }
func (s synthetic) ImageSize() int { return s.size }
func (s synthetic) Load(i int, color, gray []float32, flip bool) error {
	for p := range gray {
		x := p % s.size
		if flip {
			x = s.size - 1 - x
		}
		v := float32(math.Sin(float64(i) + float64(x)*0.4 + float64(p/s.size)*0.2))
		color[p], color[len(gray)+p], color[2*len(gray)+p] = v, -v, v/2
		gray[p] = 0.299*v - 0.587*v + 0.114*v/2
	}
	return nil
}

func newWorker(t *testing.T) (*Worker, *model.UNet) {
	t.Helper()
	cfg := model.Config{Widths: []int{4, 8}, BlockDepth: 1, EmbedDims: 32}
	w, err := New("w", cfg, synthetic{n: 8, size: 8})
	if err != nil {
		t.Fatal(err)
	}
	net, _ := model.New(cfg)
	net.Init(rand.New(rand.NewPCG(1, 1)))
	for i := len(net.Params) - 15; i < len(net.Params); i++ {
		net.Params[i] = 0.1
	}
	if err := w.Load(trainstate.Replica{Params: net.Params, Buffers: net.Buffers(nil), Adam: model.NewAdam(net.NumParams(), 1e-3),
		EMAParams: net.Params, EMABuffers: net.Buffers(nil), Rule: model.EMA{Decay: 0.9, CopyBuffers: true}}); err != nil {
		t.Fatal(err)
	}
	return w, net
}

func TestComputeDeterministic(t *testing.T) {
	w, _ := newWorker(t)
	task := Task{Step: 3, Epoch: 1, Indices: []int{5, 2, 7}, Seed: 9, Flip: true}
	a, err := w.Compute(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	ga := append([]float32(nil), a.Grads...)
	b, _ := w.Compute(context.Background(), task)
	if a.Loss != b.Loss || a.Count != 3 {
		t.Fatalf("losses %g %g, count %d", a.Loss, b.Loss, a.Count)
	}
	for i := range ga {
		if ga[i] != b.Grads[i] {
			t.Fatal("same task, different gradients")
		}
	}
	task.Step = 4 // new noise
	c, _ := w.Compute(context.Background(), task)
	if c.Loss == a.Loss {
		t.Fatal("another step drew the same noise")
	}
}

// TestNoiseIndependentOfSplit: an example's time and noise depend on
// (seed, step, index) only, so any split of a batch sees the same inputs:
// with one-image shares, the losses of the shares average to what
// per-example computation gives regardless of order.
func TestNoiseIndependentOfSplit(t *testing.T) {
	w, _ := newWorker(t)
	whole := map[int]float64{}
	for _, i := range []int{1, 4, 6} {
		r, err := w.Compute(context.Background(), Task{Step: 2, Indices: []int{i}, Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		whole[i] = r.Loss
	}
	// the same examples in another order, one at a time, at the same step
	for _, i := range []int{6, 1, 4} {
		r, _ := w.Compute(context.Background(), Task{Step: 2, Indices: []int{i}, Seed: 5})
		if r.Loss != whole[i] {
			t.Fatalf("example %d: loss %g alone after others, %g before", i, r.Loss, whole[i])
		}
	}
}

func TestWorkerErrors(t *testing.T) {
	cfg := model.Config{Widths: []int{4, 8}, BlockDepth: 1, EmbedDims: 32}
	w, _ := New("w", cfg, synthetic{n: 8, size: 8})
	if _, err := w.Compute(context.Background(), Task{Indices: []int{0}}); err == nil || !strings.Contains(err.Error(), "no state") {
		t.Fatalf("compute before load: %v", err)
	}
	if err := w.Load(trainstate.Replica{Params: make([]float32, 3), Adam: model.NewAdam(3, 1)}); err == nil {
		t.Fatal("mis-sized state accepted")
	}
	w2, _ := newWorker(t)
	if _, err := w2.Compute(context.Background(), Task{}); err == nil {
		t.Fatal("empty share accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w2.Compute(ctx, Task{Indices: []int{0}}); err == nil {
		t.Fatal("cancelled context accepted")
	}
}

// TestStepStoppingIsQuiet: a step that fails because the worker is
// stopping (its context cancelled) is not logged as a failure (clean
// exits warned "step failed … context canceled").
func TestStepStoppingIsQuiet(t *testing.T) {
	w, _ := newWorker(t)
	t.Cleanup(w.Close)
	var log bytes.Buffer
	m := &Member{W: w, Log: slog.New(slog.NewTextHandler(&log, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rep := m.Step(ctx, &control.Task{Gen: 7, Step: 1}, 0); rep.Err == "" {
		t.Fatal("a task of another generation was computed")
	}
	if strings.Contains(log.String(), "WARN") {
		t.Errorf("stopping logged a warning: %s", log.String())
	}
	m.Step(context.Background(), &control.Task{Gen: 7, Step: 1}, 0)
	if !strings.Contains(log.String(), "step failed") {
		t.Errorf("a real failure was not logged: %q", log.String())
	}
}
