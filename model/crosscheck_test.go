package model

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tinct/tinct/nn"
)

// referencePython is Debian's interpreter, which has python3-torch; the
// python3 first on PATH may be another one.
const referencePython = "/usr/bin/python3"

// requireTorch skips (loudly) when PyTorch is missing, except in CI, where
// the cross-check must run.
func requireTorch(t *testing.T) {
	t.Helper()
	out, err := exec.Command(referencePython, "-c", "import torch, numpy; print(torch.__version__)").CombinedOutput()
	if err == nil {
		t.Logf("PyTorch %s", strings.TrimSpace(string(out)))
		return
	}
	msg := fmt.Sprintf("PyTorch reference unavailable (%s -c 'import torch': %v: %s); install python3-torch python3-numpy", referencePython, err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, "SKIP:", msg)
	t.Skip(msg)
}

// Tolerances of the cross-check, each relative to the largest magnitude of
// the reference tensor it applies to (float32 arithmetic, summed in another
// order by another library).
const (
	tolOutput  = 1e-4 // network outputs, loss, BatchNorm running statistics
	tolGrad    = 1e-4 // parameter gradients
	tolStep    = 1e-3 // weight movement after Adam steps, 99.9% of elements (see stateDict)
	tolStepMax = 1e-1 // weight movement, every element (near-zero gradients: Adam step sign)
)

// TestCrossCheckPyTorch trains the full-width network for three steps in Go
// and in PyTorch from the same weights and batches, and compares the output,
// loss, every gradient, the running statistics, the weights and EMA weights
// after the steps, and eval-mode outputs of both networks.
func TestCrossCheckPyTorch(t *testing.T) {
	requireTorch(t)
	const (
		n, size, steps = 3, 32, 3
		lr, decay      = 1e-3, 0.9
	)
	dir := t.TempDir()
	cfg := DefaultConfig()
	if deviceLeg(t) { // the CPU shim's naive products: a narrower network
		cfg.Widths = []int{8, 16, 24, 32}
	}
	net, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	net.Init(rng)
	for _, name := range []string{"head.weight", "head.bias"} { // non-zero head: gradients everywhere
		p := net.param(name)
		for i := p.Offset; i < p.Offset+p.Size(); i++ {
			net.Params[i] = float32(0.05 * rng.NormFloat64())
		}
	}
	for _, b := range net.Blocks() { // non-trivial starting buffers
		for c := range b.Norm.RunningMean {
			b.Norm.RunningMean[c] = float32(0.1 * rng.NormFloat64())
			b.Norm.RunningVar[c] = float32(0.5 + rng.Float64())
		}
		b.Norm.NumBatchesTracked = 5
	}
	if err := SaveFile(filepath.Join(dir, "weights.safetensors"), net.StateDict(), nil); err != nil {
		t.Fatal(err)
	}
	conf, _ := json.Marshal(map[string]any{"widths": cfg.Widths, "block_depth": cfg.BlockDepth, "lr": lr, "ema_decay": decay, "steps": steps})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	type batch struct {
		x, eps nn.Tensor
		nv     []float32
	}
	var batches []batch
	bt := map[string]StoredTensor{}
	for s := range steps {
		x0 := nn.NewTensor(n, 3, size, size)
		gray := nn.NewTensor(n, 1, size, size)
		for i := range x0.Data {
			x0.Data[i] = 2*rng.Float32() - 1
		}
		for i := range gray.Data {
			gray.Data[i] = 2*rng.Float32() - 1
		}
		b := batch{x: nn.NewTensor(n, 4, size, size), eps: nn.NewTensor(n, 3, size, size), nv: make([]float32, n)}
		Noisy(x0, gray, b.eps, b.x, b.nv, rng)
		batches = append(batches, b)
		bt[fmt.Sprintf("x.%d", s)] = F32(b.x.Data, b.x.Shape()...)
		bt[fmt.Sprintf("eps.%d", s)] = F32(b.eps.Data, b.eps.Shape()...)
		bt[fmt.Sprintf("noise_variance.%d", s)] = F32(b.nv, n)
	}
	if err := SaveFile(filepath.Join(dir, "batches.safetensors"), bt, nil); err != nil {
		t.Fatal(err)
	}
	// A DDIM colourisation (2 samples of 2 gray images) by the final EMA
	// network; the reference starts from the noise the Go sampler draws.
	const sampleSteps, samples, grays = 5, 2, 2
	sampleSeed := uint64(99)
	sgray := nn.NewTensor(grays, 1, size, size)
	for i := range sgray.Data {
		sgray.Data[i] = 2*rng.Float32() - 1
	}
	srng := rand.New(rand.NewPCG(sampleSeed, 0))
	snoise := make([]float32, grays*samples*3*size*size)
	for i := range snoise {
		snoise[i] = float32(srng.NormFloat64())
	}
	rgray := nn.NewTensor(grays*samples, 1, size, size)
	for i := range rgray.N {
		copy(rgray.Image(i), sgray.Image(i/samples))
	}
	st := map[string]StoredTensor{
		"gray":  F32(rgray.Data, rgray.Shape()...),
		"noise": F32(snoise, grays*samples, 3, size, size),
		"steps": {DType: "I64", Shape: []int{1}, Data: I64(sampleSteps).Data},
	}
	if err := SaveFile(filepath.Join(dir, "sample.safetensors"), st, nil); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(referencePython, filepath.Join("..", "testdata", "reference", "crosscheck.py"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, out)
	}
	ref, _, err := LoadFile(filepath.Join(dir, "torch.safetensors"))
	if err != nil {
		t.Fatal(err)
	}

	net = onBackend(t, net)
	initial := net.ReadParams(nil)
	// the production step: TrainStep on the batch, then Commit (Adam, the
	// batch's BatchNorm statistics, EMA), as a world of one worker does
	ar, err := net.NewArena(n, size, size)
	if err != nil {
		t.Fatal(err)
	}
	ema := copyOnBackend(t, net)
	opt, rule := NewAdam(net.NumParams(), lr), EMA{Decay: decay, CopyBuffers: true}
	if err := net.LoadAdam(opt); err != nil {
		t.Fatal(err)
	}
	c := checker{t: t, ref: ref}
	for s, b := range batches {
		tracked := net.BatchesTracked() + 1
		loss := net.TrainStep(ar, b.x, b.nv, b.eps, 1, nil)
		c.scalar(fmt.Sprintf("loss.%d", s), loss, tolOutput)
		if s == 0 {
			c.tensor("train.out", hostValues(t, net, ar.Output()), tolOutput)
			for _, p := range net.Layout {
				c.tensor("grad."+p.Name, net.Grads[p.Offset:p.Offset+p.Size()], tolGrad)
			}
		}
		Commit(net, ema, opt, rule, net.Grads, net.Buffers(nil), tracked)
	}
	// Adam divides by √v: where a gradient is near zero its step has no
	// reliable sign, so weights are compared with an absolute floor of
	// tolWeight of the largest possible movement, lr per step.
	c.stateDict("final.", net, initial, tolOutput, lr*steps)
	c.stateDict("ema.", ema, initial, tolOutput, lr*steps)
	for _, e := range []struct {
		name string
		net  *UNet
	}{{"eval.out", ema}, {"eval_live.out", net}} {
		ar, _ := e.net.NewArena(n, size, size)
		out := e.net.Forward(ar, batches[0].x, batches[0].nv, false)
		c.tensor(e.name, hostValues(t, e.net, out), tolOutput)
	}
	sampler, err := NewSampler(ema, grays*samples, size, size)
	if err != nil {
		t.Fatal(err)
	}
	out, err := sampler.Colorize(context.Background(), sgray, samples, sampleSteps, rand.New(rand.NewPCG(sampleSeed, 0)), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.tensor("sample.out", out.Data, tolOutput)
	c.report()
}

type checker struct {
	t     *testing.T
	ref   map[string]StoredTensor
	worst []string
}

func (c *checker) get(name string) []float32 {
	r, ok := c.ref[name]
	if !ok {
		c.t.Fatalf("reference has no %s", name)
	}
	v, err := r.Float32s()
	if err != nil {
		c.t.Fatalf("reference %s: %v", name, err)
	}
	return v
}

// compare fails when max|got−ref| exceeds tol·max(max|ref|, floor).
func (c *checker) compare(name string, got, want []float32, tol, floor float64) {
	if len(got) != len(want) {
		c.t.Fatalf("%s: %d values, reference %d", name, len(got), len(want))
	}
	var maxRef, maxDiff float64
	at := 0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > maxDiff {
			maxDiff, at = d, i
		}
	}
	scale := math.Max(maxRef, floor)
	rel := maxDiff / math.Max(scale, 1e-30)
	c.worst = append(c.worst, fmt.Sprintf("%.2e %s", rel, name))
	if rel > tol {
		c.t.Errorf("%s: max |Go−PyTorch| %.3g at %d (Go %g, PyTorch %g) = %.3g of scale %.3g; tolerance %g", name, maxDiff, at, got[at], want[at], rel, scale, tol)
	}
}

func (c *checker) tensor(name string, got []float32, tol float64) {
	c.compare(name, got, c.get(name), tol, 0)
}

func (c *checker) scalar(name string, got float32, tol float64) {
	c.compare(name, []float32{got}, c.get(name), tol, 0)
}

// stateDict compares BatchNorm buffers directly and weights by their
// movement from the initial weights: Adam divides by √v, so where a gradient
// is near zero its step is sensitive to the gradient's last bits. Movements
// are compared relative to the largest possible one, lr per step: the worst
// element within tolStepMax of it, and all but one in a thousand within
// tolStep (at least one element may exceed it).
func (c *checker) stateDict(prefix string, u *UNet, initial []float32, tol, maxMove float64) {
	params := u.ReadParams(nil)
	for _, p := range u.Layout {
		got := params[p.Offset : p.Offset+p.Size()]
		want := c.get(prefix + p.Name)
		init := initial[p.Offset:]
		var diffs []float64
		for i := range got {
			dg, dw := float64(got[i])-float64(init[i]), float64(want[i])-float64(init[i])
			diffs = append(diffs, math.Abs(dg-dw)/maxMove)
		}
		sort.Float64s(diffs)
		worst, p999 := diffs[len(diffs)-1], diffs[len(diffs)-1-max(1, len(diffs)/1000)]
		c.worst = append(c.worst, fmt.Sprintf("%.2e %s (movement; 99.9%%: %.2e)", worst, prefix+p.Name, p999))
		if worst > tolStepMax || p999 > tolStep {
			c.t.Errorf("%s%s: movement differs from PyTorch's by up to %.3g of lr·steps (99.9th percentile %.3g); tolerance %g (%g)", prefix, p.Name, worst, p999, tolStepMax, tolStep)
		}
	}
	for name, tensor := range u.StateDict() {
		if !strings.Contains(name, ".norm.") {
			continue
		}
		if strings.HasSuffix(name, "num_batches_tracked") {
			got, _ := tensor.Int64()
			want, err := c.ref[prefix+name].Int64()
			if err != nil || got != want {
				c.t.Errorf("%s%s: %d, PyTorch %d (%v)", prefix, name, got, want, err)
			}
			continue
		}
		got, _ := tensor.Float32s()
		c.compare(prefix+name, got, c.get(prefix+name), tol, 0)
	}
}

func (c *checker) report() {
	sort.Slice(c.worst, func(i, j int) bool {
		var a, b float64
		fmt.Sscan(c.worst[i], &a)
		fmt.Sscan(c.worst[j], &b)
		return a > b
	})
	c.t.Logf("%d comparisons; largest relative differences:", len(c.worst))
	for _, w := range c.worst[:min(8, len(c.worst))] {
		c.t.Log("  ", w)
	}
}
