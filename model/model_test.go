package model

import (
	"bytes"
	"context"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/tinct/tinct/nn"
)

func TestDefaultNetworkSize(t *testing.T) {
	u, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := u.NumParams(); got != 1950659 {
		t.Fatalf("parameters: %d, want 1,950,659 (docs/design.md)", got)
	}
	// docs/design.md: forward ≈ 4.57 G multiply-adds per 128×128 image.
	if g := float64(u.MACs(128, 128)) / 1e9; math.Abs(g-4.57) > 0.01 {
		t.Fatalf("forward multiply-adds at 128²: %.3f G, want ≈4.57 G", g)
	}
}

func TestSamplerTimes(t *testing.T) {
	for _, tc := range []struct {
		steps int
		want  []int
	}{
		{1, []int{999}},
		{2, []int{999, 0}},
		{3, []int{999, 500, 0}}, // 499.5 rounds half to even
		{4, []int{999, 666, 333, 0}},
	} {
		got := SamplerTimes(tc.steps)
		if len(got) != len(tc.want) {
			t.Fatalf("steps %d: %v want %v", tc.steps, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("steps %d: %v want %v", tc.steps, got, tc.want)
			}
		}
	}
	if ts := SamplerTimes(100); ts[0] != 999 || ts[99] != 0 || len(ts) != 100 {
		t.Fatalf("100 steps: %v", ts)
	}
}

func TestRates(t *testing.T) {
	s, n := Rates(0)
	if math.Abs(s-0.95) > 1e-12 || math.Abs(s*s+n*n-1) > 1e-12 {
		t.Fatalf("t=0: signal %g noise %g", s, n)
	}
	s, _ = Rates(1)
	if math.Abs(s-0.02) > 1e-12 {
		t.Fatalf("t=1: signal %g", s)
	}
}

func tinyNet(t *testing.T, seed uint64) *UNet {
	t.Helper()
	u, err := New(Config{Widths: []int{4, 8}, BlockDepth: 2, EmbedDims: 32})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	u.Init(rng)
	for _, p := range u.Layout { // make the head non-zero so gradients reach every layer
		if strings.HasPrefix(p.Name, "head.") {
			for i := p.Offset; i < p.Offset+p.Size(); i++ {
				u.Params[i] = float32(0.3 * rng.NormFloat64())
			}
		}
	}
	return u
}

func randInput(rng *rand.Rand, n, h, w int) (nn.Tensor, []float32) {
	x := nn.NewTensor(n, 4, h, w)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	nv := make([]float32, n)
	for i := range nv {
		nv[i] = rng.Float32()
	}
	return x, nv
}

// TestUNetGradient checks every parameter gradient of a tiny U-Net (widths
// [4,8], 8×8, two blocks per level) in training mode against central
// differences.
//
// On a device backend every gradient is still computed, and a sample of
// each tensor's (six values) is checked: each check is two forward passes.
func TestUNetGradient(t *testing.T) {
	u := onBackend(t, tinyNet(t, 1))
	rng := rand.New(rand.NewPCG(2, 2))
	ar, err := u.NewArena(3, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	x, nv := randInput(rng, 3, 8, 8)
	r := nn.NewTensor(3, 3, 8, 8)
	for i := range r.Data {
		r.Data[i] = float32(rng.NormFloat64())
	}
	loss := func() float64 {
		y := hostValues(t, u, u.Forward(ar, x, nv, true))
		var s float64
		for i, v := range y {
			s += float64(v) * float64(r.Data[i])
		}
		return s
	}
	loss()
	u.compute().ZeroVec(u.G)
	dOut := ar.dOut // r on the backend
	u.compute().Upload(dOut.Flat(), r.Data)
	u.Backward(ar, dOut)
	params := u.ReadParams(nil)
	var maxG float64
	for _, g := range u.Grads {
		maxG = math.Max(maxG, math.Abs(float64(g)))
	}
	const h = 1e-2
	for _, p := range u.Layout {
		var worst float64
		stride := 1
		if u.OnDevice() {
			stride = max(1, p.Size()/6)
		}
		for i := p.Offset; i < p.Offset+p.Size(); i += stride {
			orig := params[i]
			params[i] = orig + h
			u.LoadParams(params)
			lp := loss()
			params[i] = orig - h
			u.LoadParams(params)
			lm := loss()
			params[i] = orig
			u.LoadParams(params)
			num := (lp - lm) / (2 * h)
			ana := float64(u.Grads[i])
			// relative to the parameter tensor's largest gradient, with a
			// floor at 1% of the network's largest
			var scale float64
			for _, g := range u.Grads[p.Offset : p.Offset+p.Size()] {
				scale = math.Max(scale, math.Abs(float64(g)))
			}
			scale = math.Max(scale, 1e-2*maxG)
			e := math.Abs(num-ana) / scale
			worst = math.Max(worst, e)
			if e > 2e-2 {
				t.Fatalf("%s[%d]: numeric %.6g, analytic %.6g (error %.3g of %.3g)", p.Name, i-p.Offset, num, ana, e, scale)
			}
		}
		t.Logf("%-28s %5d values, worst relative error %.2g", p.Name, p.Size(), worst)
	}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	u := tinyNet(t, 3)
	u.Blocks()[1].Norm.RunningMean[2] = 0.25
	u.Blocks()[1].Norm.NumBatchesTracked = 7
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, u.StateDict(), map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if (binaryLen(buf.Bytes())+8)%8 != 0 {
		t.Fatal("header not padded to 8 bytes")
	}
	sd, meta, err := ReadSafetensors(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Fatalf("metadata %v", meta)
	}
	v := tinyNet(t, 4)
	if err := v.LoadStateDict(sd); err != nil {
		t.Fatal(err)
	}
	for i := range u.Params {
		if u.Params[i] != v.Params[i] {
			t.Fatalf("param %d differs after round trip", i)
		}
	}
	if v.Blocks()[1].Norm.RunningMean[2] != 0.25 || v.Blocks()[1].Norm.NumBatchesTracked != 7 {
		t.Fatal("BatchNorm buffers not restored")
	}
}

func binaryLen(b []byte) int {
	return int(uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24)
}

func TestLoadStateDictStrict(t *testing.T) {
	u := tinyNet(t, 5)
	for _, tc := range []struct {
		name   string
		change func(map[string]StoredTensor)
		want   string
	}{
		{"missing", func(sd map[string]StoredTensor) { delete(sd, "downs.0.blocks.1.conv2.weight") }, "missing tensor downs.0.blocks.1.conv2.weight"},
		{"extra", func(sd map[string]StoredTensor) { sd["ups.9.blocks.0.conv1.weight"] = F32([]float32{1}, 1) }, "unexpected tensor ups.9.blocks.0.conv1.weight"},
		{"misshaped", func(sd map[string]StoredTensor) { sd["stem.weight"] = F32(make([]float32, 16), 4, 4, 1, 1) }, "tensor stem.weight: shape [4 4 1 1], want [4 4 1 1]"},
		{"wrong dtype", func(sd map[string]StoredTensor) { sd["mids.0.norm.num_batches_tracked"] = F32([]float32{1}) }, "tensor mids.0.norm.num_batches_tracked: dtype F32, want I64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := u.StateDict()
			if tc.name == "misshaped" {
				sd["stem.weight"] = F32(make([]float32, 8), 2, 4, 1, 1)
				tc.want = "tensor stem.weight: shape [2 4 1 1], want [4 4 1 1]"
			} else {
				tc.change(sd)
			}
			before := append([]float32(nil), u.Params...)
			err := u.LoadStateDict(sd)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			for i := range before {
				if before[i] != u.Params[i] {
					t.Fatal("a failed load changed the weights")
				}
			}
		})
	}
}

func TestReadSafetensorsCorrupt(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, map[string]StoredTensor{"a": F32([]float32{1, 2, 3}, 3)}, nil); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	for _, cut := range []int{4, 12, len(full) - 1} {
		if _, _, err := ReadSafetensors(bytes.NewReader(full[:cut])); err == nil {
			t.Errorf("truncated to %d bytes: no error", cut)
		}
	}
	if _, _, err := ReadSafetensors(strings.NewReader("not a safetensors file at all")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestSamplerDeterministic(t *testing.T) {
	u := onBackend(t, tinyNet(t, 6))
	s, err := NewSampler(u, 4, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	gray := nn.NewTensor(2, 1, 8, 8)
	for i := range gray.Data {
		gray.Data[i] = float32(i%7)/3 - 1
	}
	calls := 0
	run := func(seed uint64) []float32 {
		out, err := s.Colorize(context.Background(), gray, 2, 5, rand.New(rand.NewPCG(seed, 0)), func(k, n int) { calls++ })
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), out.Data...)
	}
	a, b, c := run(1), run(1), run(2)
	if calls != 15 {
		t.Fatalf("progress called %d times, want 15", calls)
	}
	same := func(x, y []float32) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatal("same seed, different colourisations")
	}
	if same(a, c) {
		t.Fatal("different seeds, same colourisations")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Colorize(ctx, gray, 2, 5, rand.New(rand.NewPCG(1, 0)), nil); err == nil {
		t.Fatal("cancelled context: no error")
	}
	if _, err := s.Colorize(context.Background(), gray, 3, 5, rand.New(rand.NewPCG(1, 0)), nil); err == nil {
		t.Fatal("wrong batch: no error")
	}
}

// TestSamplerOneStep checks the DDIM arithmetic on one step: the result is
// x̂0 = (x − noise·ε̂)/signal at t = 999.
func TestSamplerOneStep(t *testing.T) {
	u := onBackend(t, tinyNet(t, 7))
	s, _ := NewSampler(u, 1, 8, 8)
	gray := nn.NewTensor(1, 1, 8, 8)
	out, _ := s.Colorize(context.Background(), gray, 1, 1, rand.New(rand.NewPCG(3, 0)), nil)
	got := append([]float32(nil), out.Data...)
	rng := rand.New(rand.NewPCG(3, 0))
	x := nn.NewTensor(1, 4, 8, 8)
	for i := 0; i < 3*64; i++ {
		x.Data[i] = float32(rng.NormFloat64())
	}
	sig, noi := RatesAt(999)
	ar, _ := u.NewArena(1, 8, 8)
	eps := hostValues(t, u, u.Forward(ar, x, []float32{float32(noi * noi)}, false))
	for i := range got {
		want := (x.Data[i] - float32(noi)*eps[i]) / float32(sig)
		if math.Abs(float64(got[i]-want)) > 1e-6*math.Max(1, math.Abs(float64(want))) {
			t.Fatalf("x̂0[%d] = %g, want %g", i, got[i], want)
		}
	}
}

// TestTrainingDeterministic: the same weights, batches and seed give
// bitwise the same weights, EMA and BatchNorm buffers after training steps
// (the kernels split work statically, so no sum depends on timing).
func TestTrainingDeterministic(t *testing.T) {
	run := func() *trainer {
		u := onBackend(t, tinyNet(t, 8))
		tr, err := newTrainer(u, 1e-3, EMA{Decay: 0.9, CopyBuffers: true}, 3, 16, 16)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, 6))
		x0, gray := nn.NewTensor(3, 3, 16, 16), nn.NewTensor(3, 1, 16, 16)
		for i := range x0.Data {
			x0.Data[i] = 2*rng.Float32() - 1
		}
		for i := range gray.Data {
			gray.Data[i] = 2*rng.Float32() - 1
		}
		for range 3 {
			tr.step(x0, gray, rng)
		}
		return tr
	}
	a, b := run(), run()
	for _, v := range []struct {
		what string
		a, b []float32
	}{
		{"parameter", a.net.ReadParams(nil), b.net.ReadParams(nil)},
		{"EMA parameter", a.ema.ReadParams(nil), b.ema.ReadParams(nil)},
		{"BatchNorm buffer", a.net.Buffers(nil), b.net.Buffers(nil)},
	} {
		for i := range v.a {
			if math.Float32bits(v.a[i]) != math.Float32bits(v.b[i]) {
				t.Fatalf("%s %d differs between identical runs", v.what, i)
			}
		}
	}
}

func TestSamplerTimesHalfToEven(t *testing.T) {
	// linspace(999, 0, 7)[1] = 832.5 rounds to 832, as numpy's round does
	if got := SamplerTimes(7)[1]; got != 832 {
		t.Fatalf("SamplerTimes(7)[1] = %d, want 832", got)
	}
}

// TestBackwardNotify: ready(from) comes with decreasing offsets down to 0,
// and at each call Grads[from:] already holds its final values.
//
// On a device, this is the download of each tail before ready.
func TestBackwardNotify(t *testing.T) {
	u := onBackend(t, tinyNet(t, 9))
	rng := rand.New(rand.NewPCG(3, 4))
	ar, _ := u.NewArena(2, 8, 8)
	x, nv := randInput(rng, 2, 8, 8)
	dh := make([]float32, 2*3*8*8)
	for i := range dh {
		dh[i] = float32(rng.NormFloat64())
	}
	d := ar.dOut
	u.compute().Upload(d.Flat(), dh)
	clearGrads := func() {
		u.compute().ZeroVec(u.G)
		clear(u.Grads)
	}
	u.Forward(ar, x, nv, true)
	clearGrads()
	u.Backward(ar, d)
	final := append([]float32(nil), u.Grads...)
	u.Forward(ar, x, nv, true)
	clearGrads()
	last := len(u.Grads) + 1
	calls := 0
	u.BackwardNotify(ar, d, func(from int) {
		calls++
		if from >= last {
			t.Fatalf("ready(%d) after ready(%d): offsets must decrease", from, last)
		}
		last = from
		for i := from; i < len(final); i++ {
			if u.Grads[i] != final[i] {
				t.Fatalf("ready(%d): Grads[%d] = %g, final %g", from, i, u.Grads[i], final[i])
			}
		}
	})
	if last != 0 || calls != len(u.Blocks())+2 {
		t.Fatalf("last ready(%d), %d calls; want 0 and %d", last, calls, len(u.Blocks())+2)
	}
}

// TestSamplerPreview: previews come every n steps (not at the last), hold
// the x̂0 estimate, and do not change the result.
func TestSamplerPreview(t *testing.T) {
	u := onBackend(t, tinyNet(t, 10))
	s, _ := NewSampler(u, 1, 8, 8)
	gray := nn.NewTensor(1, 1, 8, 8)
	plain, _ := s.Colorize(context.Background(), gray, 1, 7, rand.New(rand.NewPCG(4, 0)), nil)
	want := append([]float32(nil), plain.Data...)
	var steps []int
	var first []float32
	s.SetPreview(3, func(step int, x0 nn.Tensor) {
		steps = append(steps, step)
		if first == nil {
			first = append([]float32(nil), x0.Data...)
		}
	})
	got, _ := s.Colorize(context.Background(), gray, 1, 7, rand.New(rand.NewPCG(4, 0)), nil)
	if len(steps) != 2 || steps[0] != 3 || steps[1] != 6 {
		t.Fatalf("previews at steps %v, want [3 6]", steps)
	}
	for i := range want {
		if got.Data[i] != want[i] {
			t.Fatal("previews changed the result")
		}
	}
	if first == nil || first[0] == 0 {
		t.Fatal("empty preview")
	}
}

// TestStepAllocatesNoBuffers: after the first step a training step
// allocates no buffers, only small bookkeeping (closures of the parallel
// loops, the GEMM call path): about 180 KB in ~4,400 allocations here,
// where one activation buffer alone would be 260 KB.
func TestStepAllocatesNoBuffers(t *testing.T) {
	if nn.ActiveGEMM().Name() == "go" {
		t.Skip("the pure-Go GEMM (gonum) allocates its own packing buffers in every call; this checks tinct's buffers with a native GEMM")
	}
	u, _ := New(DefaultConfig())
	rng := rand.New(rand.NewPCG(1, 1))
	u.Init(rng)
	tr, _ := newTrainer(u, 2e-4, EMA{Decay: 0.999, CopyBuffers: true}, 2, 32, 32)
	x0, gray := nn.NewTensor(2, 3, 32, 32), nn.NewTensor(2, 1, 32, 32)
	tr.step(x0, gray, rng)
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	const steps = 5
	for range steps {
		tr.step(x0, gray, rng)
	}
	runtime.ReadMemStats(&b)
	perStep := (b.TotalAlloc - a.TotalAlloc) / steps
	t.Logf("per step: %d allocations, %d bytes", (b.Mallocs-a.Mallocs)/steps, perStep)
	if perStep > 400<<10 {
		t.Fatalf("a training step allocated %d bytes: buffers are being allocated per step", perStep)
	}
}

// trainer is a world of one: TrainStep on a whole batch, then Commit.
type trainer struct {
	net, ema     *UNet
	opt          *Adam
	rule         EMA
	ar           *Arena
	input, noise nn.Tensor
	nv, buf      []float32
}

func newTrainer(net *UNet, lr float64, rule EMA, n, h, w int) (*trainer, error) {
	ar, err := net.NewArena(n, h, w)
	if err != nil {
		return nil, err
	}
	var ema *UNet
	if net.OnDevice() {
		be, err := nn.EnvDevice()
		if err != nil {
			return nil, err
		}
		if ema, err = net.To(be); err != nil {
			return nil, err
		}
	} else {
		ema, _ = New(net.Config)
		ema.CopyFrom(net)
	}
	opt := NewAdam(net.NumParams(), lr)
	if err := net.LoadAdam(opt); err != nil {
		return nil, err
	}
	return &trainer{net: net, ema: ema, opt: opt, rule: rule, ar: ar,
		input: nn.NewTensor(n, 4, h, w), noise: nn.NewTensor(n, 3, h, w), nv: make([]float32, n)}, nil
}

func (t *trainer) step(x0, gray nn.Tensor, rng *rand.Rand) float32 {
	Noisy(x0, gray, t.noise, t.input, t.nv, rng)
	tracked := t.net.BatchesTracked() + 1
	loss := t.net.TrainStep(t.ar, t.input, t.nv, t.noise, 1, nil)
	t.buf = t.net.Buffers(t.buf[:0])
	Commit(t.net, t.ema, t.opt, t.rule, t.net.Grads, t.buf, tracked)
	return loss
}

// TestOneDNNUnderCPUProfile: training on the oneDNN backend while a CPU
// profile runs. SIGPROF may land on any thread, OpenMP's workers included;
// before they were kept from Go's signals (nn's dnnlAPI.pin), this
// corrupted the C heap within a step or two.
func TestOneDNNUnderCPUProfile(t *testing.T) {
	be, err := nn.NewCompute("onednn")
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	if err := pprof.StartCPUProfile(io.Discard); err != nil {
		t.Skipf("a CPU profile is already running: %v", err)
	}
	defer pprof.StopCPUProfile()
	u, _ := New(DefaultConfig())
	rng := rand.New(rand.NewPCG(1, 1))
	u.Init(rng)
	ar, err := u.NewArenaOn(be, 4, 128, 128)
	if err != nil {
		t.Fatal(err)
	}
	x, noise := nn.NewTensor(4, 4, 128, 128), nn.NewTensor(4, 3, 128, 128)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	for range 3 {
		u.TrainStep(ar, x, []float32{0.1, 0.2, 0.5, 0.9}, noise, 1, nil)
	}
}
