package gpunet

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/check"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// The device network runs on the CPU shim (the .cu kernels compiled by g++,
// cuBLAS replaced by cuda.HostGemm) and is compared with the CPU model on
// a tiny network: widths {8,16} with two blocks per level (so that a down
// block after a level's first adds to its input's gradient, and an up
// level has two concatenations), 4 embedding dims, 16×16 images, batch 2.
//
// Tolerances: each comparison is |got − want| ≤ abs·max|want| + rel·|want|
// (+ floor) over one tensor (the output, one parameter tensor's gradient, …),
// scaled by the tensor's largest value because gradients of different
// layers differ by orders of magnitude. The kernels follow the Go code
// operation by operation; what differs is the order of sums (cuBLAS-style
// products over K, BatchNorm's reductions in double per block, the weight
// gradient as a product per image), so the results agree to a few float
// roundings, amplified through the network's depth.
var (
	tolForward = tol{abs: 1e-5, rel: 1e-5} // outputs, BatchNorm buffers
	tolGrad    = tol{abs: 1e-5, rel: 1e-4} // gradients, per parameter tensor
	// parameters after Adam steps: Adam divides each gradient by its own
	// running magnitude, so a small gradient's rounding moves its update
	// by a fraction of lr whatever the tensor's scale: 1% of one step
	tolParams = tol{rel: 1e-5, floor: 1e-2 * testLR}
)

const testLR = 1e-3

var testConfig = model.Config{Widths: []int{8, 16}, BlockDepth: 2, EmbedDims: 4}

const testN, testH, testW = 2, 16, 16

var (
	shimOnce sync.Once
	shimDir  string
	shimExe  string
	shimErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shimDir != "" {
		os.RemoveAll(shimDir)
	}
	os.Exit(code)
}

// startShim compiles the shim once per test binary and starts one.
func startShim(t *testing.T, reverse ...bool) *check.Shim {
	t.Helper()
	shimOnce.Do(func() {
		if shimDir, shimErr = os.MkdirTemp("", "tinct-gpunet-shim-"); shimErr == nil {
			shimExe, shimErr = check.BuildShim(shimDir)
		}
	})
	if errors.Is(shimErr, check.ErrNoCompiler) {
		t.Skip("no g++: the device network cannot be run on the CPU shim here")
	}
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	s, err := check.StartShim(shimExe, reverse...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tinyNet is a network with PyTorch's initialisation, a non-zero head (so
// that gradients reach every layer) and random BatchNorm running
// statistics (so that eval mode is not the identity normalisation).
func tinyNet(t *testing.T, seed uint64) *model.UNet {
	t.Helper()
	u, err := model.New(testConfig)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	u.Init(rng)
	for _, p := range u.Layout {
		if strings.HasPrefix(p.Name, "head.") {
			for i := p.Offset; i < p.Offset+p.Size(); i++ {
				u.Params[i] = float32(0.3 * rng.NormFloat64())
			}
		}
	}
	bufs := u.Buffers(nil)
	i := 0
	for _, b := range u.Blocks() {
		for c := range b.In {
			bufs[i+c] = float32(0.2 * rng.NormFloat64())  // mean
			bufs[i+b.In+c] = float32(0.5 + rng.Float64()) // variance
		}
		i += 2 * b.In
	}
	u.SetBuffers(bufs, 3)
	return u
}

// clone is a second CPU network with u's weights and buffers.
func clone(t *testing.T, u *model.UNet) *model.UNet {
	t.Helper()
	v, err := model.New(u.Config)
	if err != nil {
		t.Fatal(err)
	}
	v.CopyFrom(u)
	return v
}

// batch draws an input, noise variances and a target noise.
func batch(rng *rand.Rand, n, h, w int) (x nn.Tensor, nv []float32, noise nn.Tensor) {
	return batchC(rng, n, 4, h, w)
}

// batchC is batch with c input channels.
func batchC(rng *rand.Rand, n, c, h, w int) (x nn.Tensor, nv []float32, noise nn.Tensor) {
	x, noise = nn.NewTensor(n, c, h, w), nn.NewTensor(n, 3, h, w)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	for i := range noise.Data {
		noise.Data[i] = float32(rng.NormFloat64())
	}
	nv = make([]float32, n)
	for i := range nv {
		nv[i] = rng.Float32()
	}
	return x, nv, noise
}

type tol struct{ abs, rel, floor float64 }

// compare checks got against want with t scaled by max|want| for abs;
// it returns the worst ratio of error to tolerance (≤ 1 passes).
func compare(tb testing.TB, name string, got, want []float32, t tol) float64 {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return math.Inf(1)
	}
	var scale float64
	for _, w := range want {
		scale = max(scale, math.Abs(float64(w)))
	}
	worst, maxAbs, at := 0.0, 0.0, -1
	for i, w := range want {
		d := math.Abs(float64(got[i]) - float64(w))
		if math.IsNaN(float64(got[i])) {
			d = math.Inf(1)
		}
		r := d / (t.abs*scale + t.rel*math.Abs(float64(w)) + t.floor + 1e-30)
		if d > 0 && r > worst {
			worst, at = r, i
		}
		maxAbs = max(maxAbs, d)
	}
	if worst > 1 {
		tb.Errorf("%s: [%d] = %g, want %g (max |Δ| %.3g, scale %.3g, %.2f of tolerance)", name, at, got[at], want[at], maxAbs, scale, worst)
	}
	return worst
}

// compareGrads compares two gradient (or parameter) vectors tensor by
// tensor of the layout and returns the worst ratio.
func compareGrads(tb testing.TB, what string, u *model.UNet, got, want []float32, t tol) float64 {
	tb.Helper()
	worst := 0.0
	for _, p := range u.Layout {
		worst = max(worst, compare(tb, what+" "+p.Name, got[p.Offset:p.Offset+p.Size()], want[p.Offset:p.Offset+p.Size()], t))
	}
	return worst
}

func newNet(t *testing.T, s *check.Shim, u *model.UNet) *Net {
	t.Helper()
	d, err := New(ShimBackend(s), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// TestForward compares the forward pass in training mode (output and the
// running statistics it updates) and in eval mode (Forward) with the CPU.
func TestForward(t *testing.T) {
	s := startShim(t)
	host := tinyNet(t, 1)
	d := newNet(t, s, host)
	ref := clone(t, host)
	ar, err := ref.NewArena(testN, testH, testW)
	if err != nil {
		t.Fatal(err)
	}
	x, nv, _ := batch(rand.New(rand.NewPCG(2, 2)), testN, testH, testW)

	// eval first: the running statistics are tinyNet's random ones
	want := ref.Forward(ar, x, nv, false).Data
	got := make([]float32, len(want))
	if err := d.Forward(x, nv, got); err != nil {
		t.Fatal(err)
	}
	t.Logf("forward eval: worst %.3f of tolerance", compare(t, "forward eval", got, want, tolForward))

	// training mode, through the unexported pass (the API's training
	// forward is TrainStep's)
	want = ref.Forward(ar, x, nv, true).Data
	dar, err := d.arena(testN, testH, testW)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.upload(dar, x, nv); err != nil {
		t.Fatal(err)
	}
	o := &pass{e: d.b, ar: dar}
	d.forward(o, true)
	if o.err != nil {
		t.Fatal(o.err)
	}
	if err := d.b.Download(got, dar.out.Mem); err != nil {
		t.Fatal(err)
	}
	t.Logf("forward train: worst %.3f of tolerance", compare(t, "forward train", got, want, tolForward))
	if err := d.downloadBuffers(); err != nil {
		t.Fatal(err)
	}
	t.Logf("running statistics: worst %.3f of tolerance", compare(t, "running statistics", host.Buffers(nil), ref.Buffers(nil), tolForward))
}

// TestTrainStep compares one training step with the CPU's: the loss, every
// gradient, the BatchNorm buffers and their count, with scale ≠ 1; and
// checks the ready callbacks: the CPU's offsets in the CPU's order, and at
// each ready(from) host.Grads[from:] already final.
func TestTrainStep(t *testing.T) {
	s := startShim(t)
	host := tinyNet(t, 3)
	d := newNet(t, s, host)
	ref := clone(t, host)
	ar, err := ref.NewArena(testN, testH, testW)
	if err != nil {
		t.Fatal(err)
	}
	x, nv, noise := batch(rand.New(rand.NewPCG(4, 4)), testN, testH, testW)
	const scale = 0.37

	var wantReady []int
	wantLoss := ref.TrainStep(ar, x, nv, noise, scale, func(from int) { wantReady = append(wantReady, from) })

	for i := range host.Grads { // stale values must all be overwritten
		host.Grads[i] = float32(math.NaN())
	}
	var gotReady []int
	snapshots := map[int][]float32{}
	loss, err := d.TrainStep(x, nv, noise, scale, func(from int) {
		gotReady = append(gotReady, from)
		snapshots[from] = append([]float32(nil), host.Grads[from:]...)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.7g, CPU %.7g", loss, wantLoss)
	compare(t, "loss", []float32{loss}, []float32{wantLoss}, tol{rel: 1e-6})
	t.Logf("gradients: worst %.3f of tolerance", compareGrads(t, "grad", host, host.Grads, ref.Grads, tolGrad))
	t.Logf("running statistics: worst %.3f of tolerance", compare(t, "running statistics", host.Buffers(nil), ref.Buffers(nil), tolForward))
	if host.BatchesTracked() != ref.BatchesTracked() {
		t.Errorf("num_batches_tracked %d, CPU %d", host.BatchesTracked(), ref.BatchesTracked())
	}

	if fmt.Sprint(gotReady) != fmt.Sprint(wantReady) {
		t.Errorf("ready offsets %v, CPU %v", gotReady, wantReady)
	}
	if len(gotReady) != len(host.Blocks())+2 || gotReady[len(gotReady)-1] != 0 {
		t.Errorf("ready offsets %v: want %d calls down to 0", gotReady, len(host.Blocks())+2)
	}
	for from, snap := range snapshots {
		for i, v := range snap {
			if math.Float32bits(v) != math.Float32bits(host.Grads[from+i]) {
				t.Errorf("ready(%d): Grads[%d] = %g, final %g", from, from+i, v, host.Grads[from+i])
				break
			}
		}
		// and equal to the CPU's final gradients then already
		compare(t, fmt.Sprintf("ready(%d) tail", from), snap, ref.Grads[from:], tol{abs: tolGrad.abs * 10, rel: tolGrad.rel})
	}
}

// TestTraining runs three steps of TrainStep+Apply (scales 1, 0.5, 1) on
// the device and on the CPU and compares the parameters after each step,
// then the eval forward with the updated weights, on another batch size
// too, and the EMA.
func TestTraining(t *testing.T) {
	s := startShim(t)
	host := tinyNet(t, 5)
	d := newNet(t, s, host)
	ref := clone(t, host)
	ar, err := ref.NewArena(testN, testH, testW)
	if err != nil {
		t.Fatal(err)
	}
	opt, refOpt := model.NewAdam(host.NumParams(), testLR), model.NewAdam(host.NumParams(), testLR)
	// Adam's first update is lr·g/(|g|+eps): with eps 1e-8, a gradient
	// whose true value is at rounding level (seen: 2.4e-8 on the device,
	// 4.3e-8 on the CPU, in a tensor whose largest is 1e-2) moves its
	// parameter by a different fraction of lr on each. An eps above the
	// gradients' rounding error keeps each update a smooth function of its
	// gradient, so the parameters can be compared; most gradients (≳1e-3)
	// are still normalised. (The adam kernel itself is checked with eps
	// 1e-8 in cuda/check.)
	opt.Eps, refOpt.Eps = 1e-4, 1e-4
	if err := d.LoadAdam(opt); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	x, nv, _ := batch(rng, testN, testH, testW)
	before := make([]float32, testN*3*testH*testW)
	if err := d.Forward(x, nv, before); err != nil {
		t.Fatal(err)
	}
	for step, scale := range []float32{1, 0.5, 1} {
		bx, bnv, bnoise := batch(rng, testN, testH, testW)
		tracked := host.BatchesTracked() + 1
		loss, err := d.TrainStep(bx, bnv, bnoise, scale, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(opt, host.Grads, host.Buffers(nil), tracked); err != nil {
			t.Fatal(err)
		}
		wantLoss := ref.TrainStep(ar, bx, bnv, bnoise, scale, nil)
		ref.Apply(refOpt, ref.Grads, ref.Buffers(nil), tracked)
		compare(t, fmt.Sprintf("step %d loss", step), []float32{loss}, []float32{wantLoss}, tol{rel: 1e-5})
		t.Logf("step %d: loss %.7g (CPU %.7g), params worst %.3f of tolerance", step, loss, wantLoss,
			compareGrads(t, fmt.Sprintf("step %d param", step), host, host.Params, ref.Params, tolParams))
		compare(t, fmt.Sprintf("step %d buffers", step), host.Buffers(nil), ref.Buffers(nil), tolForward)
		if opt.Step != int64(step+1) || host.BatchesTracked() != tracked {
			t.Errorf("step %d: Adam step %d, num_batches_tracked %d", step, opt.Step, host.BatchesTracked())
		}
	}
	// the device moments, read back, are the CPU's
	if err := d.ReadAdam(opt); err != nil {
		t.Fatal(err)
	}
	compare(t, "adam m", opt.M, refOpt.M, tolGrad)
	compare(t, "adam v", opt.V, refOpt.V, tolGrad)

	// forward after Apply: the updated weights (it moved, and matches the CPU)
	got := make([]float32, len(before))
	if err := d.Forward(x, nv, got); err != nil {
		t.Fatal(err)
	}
	want := ref.Forward(ar, x, nv, false).Data
	compare(t, "forward after apply", got, want, tolForward)
	moved := 0.0
	for i := range got {
		moved = max(moved, math.Abs(float64(got[i]-before[i])))
	}
	if moved < 1e-4 {
		t.Errorf("forward after three steps moved by %g only", moved)
	}

	// a second arena shape: batch 3 (forward and a step)
	x3, nv3, noise3 := batch(rng, 3, testH, testW)
	ar3, err := ref.NewArena(3, testH, testW)
	if err != nil {
		t.Fatal(err)
	}
	got3 := make([]float32, 3*3*testH*testW)
	if err := d.Forward(x3, nv3, got3); err != nil {
		t.Fatal(err)
	}
	compare(t, "forward batch 3", got3, ref.Forward(ar3, x3, nv3, false).Data, tolForward)
	loss3, err := d.TrainStep(x3, nv3, noise3, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "loss batch 3", []float32{loss3}, []float32{ref.TrainStep(ar3, x3, nv3, noise3, 1, nil)}, tol{rel: 1e-5})
	compareGrads(t, "grad batch 3", host, host.Grads, ref.Grads, tolGrad)
	if len(d.arenas) != 2 {
		t.Errorf("%d arenas, want 2", len(d.arenas))
	}

	// EMA of the live network into another device network
	for _, copyBuffers := range []bool{false, true} {
		avgHost := tinyNet(t, 7)
		refAvg := clone(t, avgHost)
		avg := newNet(t, s, avgHost)
		if err := d.EMA(avg, 0.9, copyBuffers); err != nil {
			t.Fatal(err)
		}
		model.EMA{Decay: 0.9, CopyBuffers: copyBuffers}.Update(refAvg, ref)
		compare(t, fmt.Sprintf("ema params copy=%v", copyBuffers), avgHost.Params, refAvg.Params, tolParams)
		compare(t, fmt.Sprintf("ema buffers copy=%v", copyBuffers), avgHost.Buffers(nil), refAvg.Buffers(nil), tolForward)
		if avgHost.BatchesTracked() != refAvg.BatchesTracked() {
			t.Errorf("ema: num_batches_tracked %d, want %d", avgHost.BatchesTracked(), refAvg.BatchesTracked())
		}
	}
}

// TestUploadReplacesWeights: after the caller replaces the host mirror's
// weights, Upload makes the device use them.
func TestUploadReplacesWeights(t *testing.T) {
	s := startShim(t)
	host := tinyNet(t, 8)
	d := newNet(t, s, host)
	other := tinyNet(t, 9)
	host.CopyFrom(other)
	if err := d.Upload(); err != nil {
		t.Fatal(err)
	}
	x, nv, _ := batch(rand.New(rand.NewPCG(10, 10)), 1, testH, testW)
	ar, err := other.NewArena(1, testH, testW)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 3*testH*testW)
	if err := d.Forward(x, nv, got); err != nil {
		t.Fatal(err)
	}
	compare(t, "forward after upload", got, other.Forward(ar, x, nv, false).Data, tolForward)

	// arenas freed are allocated again
	d.FreeArenas()
	again := make([]float32, len(got))
	if err := d.Forward(x, nv, again); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != again[i] {
			t.Fatalf("forward after FreeArenas: [%d] = %g, was %g", i, again[i], got[i])
		}
	}
}

// TestMisuse: wrong shapes and lengths are errors, not panics, and leave
// the network usable.
func TestMisuse(t *testing.T) {
	s := startShim(t)
	host := tinyNet(t, 11)
	d := newNet(t, s, host)
	x, nv, noise := batch(rand.New(rand.NewPCG(12, 12)), 2, 8, 8)
	out := make([]float32, 2*3*8*8)
	x3 := nn.NewTensor(2, 3, 8, 8)
	odd, oddNV, oddNoise := batch(rand.New(rand.NewPCG(13, 13)), 2, 7, 7)
	opt := model.NewAdam(host.NumParams(), 1e-3)
	small := model.NewAdam(10, 1e-3)
	otherCfg := testConfig
	otherCfg.EmbedDims = 6
	otherHost, err := model.New(otherCfg)
	if err != nil {
		t.Fatal(err)
	}
	other := newNet(t, s, otherHost)
	cases := []struct {
		name string
		err  error
	}{
		{"forward: 3-channel input", d.Forward(x3, nv, out)},
		{"forward: 1 noise variance for 2 images", d.Forward(x, nv[:1], out)},
		{"forward: short output", d.Forward(x, nv, out[:10])},
		{"forward: 7×7 images", d.Forward(odd, oddNV, make([]float32, 2*3*7*7))},
		{"forward: short data", d.Forward(nn.Tensor{Data: x.Data[:10], N: 2, C: 4, H: 8, W: 8, Stride: 256}, nv, out)},
		{"forward: blocked input", d.Forward(nn.Tensor{Data: x.Data, N: 2, C: 4, H: 8, W: 8, Stride: 256, Blocked: 16}, nv, out)},
		{"train: 3 noise variances", func() error { _, err := d.TrainStep(x, []float32{1, 2, 3}, noise, 1, nil); return err }()},
		{"train: noise of 2 channels", func() error {
			_, err := d.TrainStep(x, nv, nn.NewTensor(2, 2, 8, 8), 1, nil)
			return err
		}()},
		{"train: noise of another size", func() error {
			_, err := d.TrainStep(x, nv, nn.NewTensor(2, 3, 16, 16), 1, nil)
			return err
		}()},
		{"train: noise of 1 image", func() error { _, err := d.TrainStep(x, nv, noise.Batch(1), 1, nil); return err }()},
		{"train: 7×7 images", func() error { _, err := d.TrainStep(odd, oddNV, oddNoise, 1, nil); return err }()},
		{"apply: short gradient", d.Apply(opt, host.Grads[:5], host.Buffers(nil), 1)},
		{"apply: short buffers", d.Apply(opt, host.Grads, host.Buffers(nil)[:3], 1)},
		{"apply: Adam of another size", d.Apply(small, host.Grads, host.Buffers(nil), 1)},
		{"apply: nil Adam", d.Apply(nil, host.Grads, host.Buffers(nil), 1)},
		{"load adam: wrong size", d.LoadAdam(small)},
		{"read adam: wrong size", d.ReadAdam(small)},
		{"ema: other shape", d.EMA(other, 0.9, true)},
		{"ema: nil", d.EMA(nil, 0.9, true)},
		{"new: nil network", func() error { _, err := New(ShimBackend(s), nil); return err }()},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		} else {
			t.Logf("%s: %v", c.name, c.err)
		}
	}
	if opt.Step != 0 {
		t.Errorf("refused applies advanced Adam to step %d", opt.Step)
	}
	// still usable
	if _, err := d.TrainStep(x, nv, noise, 1, nil); err != nil {
		t.Fatalf("after misuse: %v", err)
	}
	d.Close()
	if err := d.Forward(x, nv, out); err == nil {
		t.Error("forward after Close: no error")
	}
	if _, err := d.TrainStep(x, nv, noise, 1, nil); err == nil {
		t.Error("train step after Close: no error")
	}
}

// TestReverseOrder runs a training step with the shim's blocks and threads
// in reverse order: the same gradients bit for bit (a result that depended
// on the order would race on a GPU).
func TestReverseOrder(t *testing.T) {
	var grads [2][]float32
	var losses [2]float32
	for i, rev := range []bool{false, true} {
		s := startShim(t, rev)
		s.Multiprocessors = 1 // grid-stride loops go round
		host := tinyNet(t, 14)
		d := newNet(t, s, host)
		x, nv, noise := batch(rand.New(rand.NewPCG(15, 15)), testN, testH, testW)
		loss, err := d.TrainStep(x, nv, noise, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		grads[i], losses[i] = append([]float32(nil), host.Grads...), loss
	}
	if losses[0] != losses[1] {
		t.Errorf("loss %g, reversed %g", losses[0], losses[1])
	}
	for i := range grads[0] {
		if math.Float32bits(grads[0][i]) != math.Float32bits(grads[1][i]) {
			t.Fatalf("Grads[%d] = %g, reversed %g", i, grads[0][i], grads[1][i])
		}
	}
}

var _ Backend = deviceBackend{}
var _ Freer = deviceBackend{}
var _ cuda.Exec = shimBackend{}

// TestOtherShapes: three levels with one block each (an up level fed by
// the previous up level, not the middle; no down block adds to its input's
// gradient), 2 embedding dims, 8×8, and input and noise given as channel
// ranges of wider tensors (uploaded image by image): the forward, a
// training step's loss, gradients and buffers equal the CPU's.
func TestOtherShapes(t *testing.T) {
	s := startShim(t)
	host, err := model.New(model.Config{Widths: []int{4, 8, 8}, BlockDepth: 1, EmbedDims: 2})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(16, 16))
	host.Init(rng)
	for _, p := range host.Layout {
		if strings.HasPrefix(p.Name, "head.") {
			for i := p.Offset; i < p.Offset+p.Size(); i++ {
				host.Params[i] = float32(0.3 * rng.NormFloat64())
			}
		}
	}
	d := newNet(t, s, host)
	ref := clone(t, host)
	const n, h, w = 2, 8, 8
	ar, err := ref.NewArena(n, h, w)
	if err != nil {
		t.Fatal(err)
	}
	wideX, nv, _ := batchC(rng, n, 5, h, w)
	wideNoise, _, _ := batchC(rng, n, 4, h, w)
	x, noise := wideX.Channels(1, 5), wideNoise.Channels(0, 3)
	if x.Contiguous() || noise.Contiguous() {
		t.Fatal("want strided input and noise")
	}
	got := make([]float32, n*3*h*w)
	if err := d.Forward(x, nv, got); err != nil {
		t.Fatal(err)
	}
	compare(t, "forward eval", got, ref.Forward(ar, x, nv, false).Data, tolForward)
	loss, err := d.TrainStep(x, nv, noise, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantLoss := ref.TrainStep(ar, x, nv, noise, 2, nil)
	compare(t, "loss", []float32{loss}, []float32{wantLoss}, tol{rel: 1e-5})
	t.Logf("gradients: worst %.3f of tolerance", compareGrads(t, "grad", host, host.Grads, ref.Grads, tolGrad))
	compare(t, "running statistics", host.Buffers(nil), ref.Buffers(nil), tolForward)
}

// countMem is memory that is only counted.
type countMem struct{ n int }

func (m countMem) At(off int) cuda.Mem { return countMem{m.n - off} }
func (m countMem) Len() int            { return m.n }

// countBackend allocates nothing and runs nothing, but checks each launch's
// arguments against the kernel's signature and each product's operands
// against their buffers: for the memory plan at full size.
type countBackend struct{}

func (countBackend) Launch(kernel string, grid, block cuda.Dim3, args ...any) error {
	k, err := cuda.Kernel(kernel)
	if err != nil {
		return err
	}
	return cuda.CheckArgs(k, args)
}
func (countBackend) Gemm(g cuda.Gemm) error             { return g.Validate() }
func (countBackend) SMs() int                           { return 0 }
func (countBackend) Alloc(n int) (cuda.Mem, error)      { return countMem{n}, nil }
func (countBackend) Upload(cuda.Mem, []float32) error   { return nil }
func (countBackend) Download([]float32, cuda.Mem) error { return nil }
func (countBackend) Sync() error                        { return nil }

// TestMemoryPlan logs the device memory of DefaultConfig's network and of
// an arena at a training and an inference shape, and checks the network's
// own share: four parameter-sized vectors, two buffer-sized, the speeds.
// Running a training step and a forward on countBackend checks every
// operation's views, launches and products at those sizes.
func TestMemoryPlan(t *testing.T) {
	host, err := model.New(model.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(countBackend{}, host)
	if err != nil {
		t.Fatal(err)
	}
	own := d.Bytes()
	if want := 4 * (4*host.NumParams() + 2*host.NumBuffers() + host.EmbedDims/2); own != want {
		t.Errorf("network: %d bytes, want %d", own, want)
	}
	t.Logf("DefaultConfig network: %.1f MB", float64(own)/1e6)
	for _, s := range [][3]int{{32, 128, 128}, {1, 256, 256}} {
		x := nn.NewTensor(s[0], 4, s[1], s[2])
		if err := d.Forward(x, make([]float32, s[0]), make([]float32, s[0]*3*s[1]*s[2])); err != nil {
			t.Fatal(err)
		}
		calls := 0
		if _, err := d.TrainStep(x, make([]float32, s[0]), nn.NewTensor(s[0], 3, s[1], s[2]), 1, func(int) { calls++ }); err != nil {
			t.Fatal(err)
		}
		if calls != len(host.Blocks())+2 {
			t.Errorf("%d ready calls", calls)
		}
		ar := d.arenas[s]
		col := 4 * ar.col.Len()
		t.Logf("arena [%d 4 %d %d]: %.2f GB, of which im2col %.2f GB", s[0], s[1], s[2], float64(d.Bytes()-own)/1e9, float64(col)/1e9)
		d.FreeArenas()
	}
}
