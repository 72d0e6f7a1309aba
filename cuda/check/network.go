package check

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// Network runs a tiny network (widths {8,16}, two blocks a level, so that
// a down block adds to its input's gradient and an up level has two
// concatenations; 4 embedding dims, 16×16 images, batch 2) on be (a
// cuda.Compute, which it closes) and on tinct's Go kernels, through
// model's own API, and compares them: the eval forward; a training step
// with scale 0.5 (loss, every parameter's gradient, the BatchNorm buffers
// and count, the ready calls); three steps of TrainStep+Apply; the
// forward with the updated weights and at another batch size; the EMA.
// It is the check a GPU session runs (`tinct cuda selftest`).
//
// The tolerances assume fp32 products (cuda.FP32 on a Device). The sums
// run in other orders (products over K, BatchNorm's reductions per block,
// the weight gradient per image), so the results differ by a few float
// roundings amplified through the network: each tensor is compared with
// abs scaled by its largest value (gradients of different layers differ
// by orders of magnitude).
func Network(be nn.Compute, seed uint64) []Result {
	return network(be, model.Config{Widths: []int{8, 16}, BlockDepth: 2, EmbedDims: 4}, seed, 2, 16)
}

// tinyNet initialises u as PyTorch does, with a non-zero head (so that
// every layer gets a gradient) and random BatchNorm running statistics
// (so that eval mode is not the identity normalisation).
func tinyNet(cfg model.Config, rng *rand.Rand) (*model.UNet, error) {
	u, err := model.New(cfg)
	if err != nil {
		return nil, err
	}
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
	return u, nil
}

func network(be nn.Compute, cfg model.Config, seed uint64, n, size int) (out []Result) {
	defer be.Close()
	fail := func(name string, err error) []Result { return append(out, Result{Case: name, Err: err}) }
	const lr = 1e-3
	rng := rand.New(rand.NewPCG(seed, 1))
	host, err := tinyNet(cfg, rng)
	if err != nil {
		return fail("network", err)
	}
	dev, err := host.To(be)
	if err != nil {
		return fail("network on the device", err)
	}
	arenas := func(n int) (*model.Arena, *model.Arena, error) {
		ar, err := host.NewArenaOn(nn.NewKernels(), n, size, size)
		if err != nil {
			return nil, nil, err
		}
		dar, err := dev.NewArena(n, size, size)
		return ar, dar, err
	}
	ar, dar, err := arenas(n)
	if err != nil {
		return fail("network arenas", err)
	}
	draw := func(n int) (nn.Tensor, []float32, nn.Tensor) {
		x, noise := nn.NewTensor(n, 4, size, size), nn.NewTensor(n, 3, size, size)
		for _, v := range [][]float32{x.Data, noise.Data} {
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
		}
		nv := make([]float32, n)
		for i := range nv {
			nv[i] = rng.Float32()
		}
		return x, nv, noise
	}
	scaled := func(name string, got, want []float32, abs, rel float64) Result {
		m := 0.0
		for _, v := range want {
			m = max(m, math.Abs(float64(v)))
		}
		return Compare(name, got, want, Tol{Abs: abs * max(m, 1e-30), Rel: rel})
	}
	// forward compares the eval forward on both (a device's failure is
	// the result's).
	forward := func(name string, ar, dar *model.Arena, x nn.Tensor, nv []float32) {
		want := host.Forward(ar, x, nv, false)
		got := make([]float32, want.N*want.C*want.HW())
		be.Download(got, dev.Forward(dar, x, nv, false).Flat())
		r := scaled(name, got, want.Data[:len(got)], 1e-5, 1e-5)
		r.Err = dev.Err()
		out = append(out, r)
	}
	// perTensor compares gradients tensor by tensor: the failures, and
	// the worst one when all pass.
	perTensor := func(name string, got, want []float32, abs, rel float64) {
		worst := Result{Case: name}
		for _, p := range host.Layout {
			r := scaled(name+" "+p.Name, got[p.Offset:p.Offset+p.Size()], want[p.Offset:p.Offset+p.Size()], abs, rel)
			if !r.OK() {
				out = append(out, r)
			}
			if !r.OK() || r.Worst >= worst.Worst {
				worst = r
			}
		}
		if worst.OK() {
			worst.Case = name + " (worst: " + strings.TrimPrefix(worst.Case, name+" ") + ")"
			worst.Elems = len(want)
			out = append(out, worst)
		}
	}

	x, nv, noise := draw(n)
	forward("network forward eval", ar, dar, x, nv)

	// a training step; the ready calls: the host's offsets in its order,
	// and at each ready(from) Grads[from:] final
	var wantReady, gotReady []int
	wantLoss := host.TrainStep(ar, x, nv, noise, 0.5, func(from int) { wantReady = append(wantReady, from) })
	for i := range dev.Grads { // stale values must all be overwritten
		dev.Grads[i] = float32(math.NaN())
	}
	snaps := map[int][]float32{}
	loss := dev.TrainStep(dar, x, nv, noise, 0.5, func(from int) {
		gotReady = append(gotReady, from)
		snaps[from] = slices.Clone(dev.Grads[from:])
	})
	if err := dev.Err(); err != nil {
		return fail("network train step", err)
	}
	out = append(out, Compare("network loss", []float32{loss}, []float32{wantLoss}, Tol{Rel: 1e-5}))
	perTensor("network gradients", dev.Grads, host.Grads, 1e-4, 1e-4)
	out = append(out, scaled("network BatchNorm buffers", dev.Buffers(nil), host.Buffers(nil), 1e-5, 1e-5))
	ready := Result{Case: "network ready calls, count", Elems: len(gotReady)}
	var differs []string
	if !slices.Equal(gotReady, wantReady) {
		differs = append(differs, fmt.Sprintf("offsets %v, host %v", gotReady, wantReady))
	}
	for from, snap := range snaps {
		if !slices.EqualFunc(snap, dev.Grads[from:], func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
			differs = append(differs, fmt.Sprintf("Grads[%d:] changed after ready(%d)", from, from))
		}
	}
	if dev.BatchesTracked() != host.BatchesTracked() {
		differs = append(differs, fmt.Sprintf("num_batches_tracked %d, host %d", dev.BatchesTracked(), host.BatchesTracked()))
	}
	ready.Mismatch = strings.Join(differs, "; ")
	out = append(out, ready)

	// Adam divides each gradient by its own running magnitude: with eps
	// 1e-8 a gradient at rounding level (seen: 2.4e-8 on the device, 4.3e-8
	// on the CPU) moves its weight by a different fraction of lr on each.
	// An eps above the gradients' rounding keeps each update a smooth
	// function of its gradient; the adam operation itself is checked with
	// eps 1e-8 by nn/opcheck. Allowed: 1% of one step.
	opt, devOpt := model.NewAdam(host.NumParams(), lr), model.NewAdam(host.NumParams(), lr)
	opt.Eps, devOpt.Eps = 1e-4, 1e-4
	if err := dev.LoadAdam(devOpt); err != nil {
		return fail("network load adam", err)
	}
	for step := range 3 {
		x, nv, noise := draw(n)
		tracked := host.BatchesTracked() + 1
		host.TrainStep(ar, x, nv, noise, 1, nil)
		host.Apply(opt, host.Grads, host.Buffers(nil), tracked)
		dev.TrainStep(dar, x, nv, noise, 1, nil)
		dev.Apply(devOpt, dev.Grads, dev.Buffers(nil), tracked)
		r := Compare(fmt.Sprintf("network params step %d", step+1), dev.ReadParams(nil), host.Params, Tol{Abs: 1e-2 * lr, Rel: 1e-5})
		r.Err = dev.Err()
		out = append(out, r)
	}
	forward("network forward after steps", ar, dar, x, nv)
	ar, dar, err = arenas(n + 1)
	if err != nil {
		return fail("network arenas", err)
	}
	x, nv, _ = draw(n + 1)
	forward(fmt.Sprintf("network forward batch %d", n+1), ar, dar, x, nv)

	// the EMA into another network on the same device
	for _, copyBuffers := range []bool{false, true} {
		avg, err := tinyNet(cfg, rng)
		if err != nil {
			return fail("network ema", err)
		}
		devAvg, err := avg.To(be)
		if err != nil {
			return fail("network ema", err)
		}
		rule := model.EMA{Decay: 0.9, CopyBuffers: copyBuffers}
		rule.Update(avg, host)
		rule.Update(devAvg, dev)
		name := fmt.Sprintf("network ema copy=%v", copyBuffers)
		r := Compare(name+" params", devAvg.ReadParams(nil), avg.Params, Tol{Abs: 1e-2 * lr, Rel: 1e-5})
		r.Err = dev.Err()
		out = append(out, r, scaled(name+" buffers", devAvg.Buffers(nil), avg.Buffers(nil), 1e-5, 1e-5))
	}
	return out
}
