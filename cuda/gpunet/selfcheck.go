package gpunet

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/tinct/tinct/cuda/check"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// SelfCheck runs a tiny network (widths {8,16}, two blocks per level, 4
// embedding dims, 16×16 images, batch 2) on b and on the CPU and compares
// them: the eval forward, a training step (loss, gradients tensor by
// tensor, BatchNorm buffers) with scale 0.5, three steps of
// TrainStep+Apply (parameters after each) and the forward with the
// updated weights. It is the check a GPU session runs (`tinct cuda
// selftest` can print its results next to the kernels'); the tests run it
// on the CPU shim. The tolerances assume fp32 products (cuda.FP32 on a
// Device); each is scaled by the largest value of the tensor compared,
// except the parameters' (1% of the learning rate: see TestTraining).
func SelfCheck(b Backend, seed uint64) []check.Result { return selfCheck(b, seed, 16) }

func selfCheck(b Backend, seed uint64, size int) []check.Result {
	var out []check.Result
	fail := func(name string, err error) []check.Result {
		return append(out, check.Result{Case: name, Err: err})
	}
	cfg := model.Config{Widths: []int{8, 16}, BlockDepth: 2, EmbedDims: 4}
	const n = 2
	h, w := size, size
	host, err := model.New(cfg)
	if err != nil {
		return fail("gpunet network", err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	host.Init(rng)
	for _, p := range host.Layout { // a non-zero head, so that every layer gets a gradient
		if strings.HasPrefix(p.Name, "head.") {
			for i := p.Offset; i < p.Offset+p.Size(); i++ {
				host.Params[i] = float32(0.3 * rng.NormFloat64())
			}
		}
	}
	ref, _ := model.New(cfg)
	ref.CopyFrom(host)
	ar, err := ref.NewArena(n, h, w)
	if err != nil {
		return fail("gpunet arena", err)
	}
	d, err := New(b, host)
	if err != nil {
		return fail("gpunet new", err)
	}
	defer d.Close()
	draw := func() (nn.Tensor, []float32, nn.Tensor) {
		x, noise := nn.NewTensor(n, 4, h, w), nn.NewTensor(n, 3, h, w)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		for i := range noise.Data {
			noise.Data[i] = float32(rng.NormFloat64())
		}
		nv := make([]float32, n)
		for i := range nv {
			nv[i] = rng.Float32()
		}
		return x, nv, noise
	}
	scaled := func(name string, got, want []float32, abs, rel float64) check.Result {
		m := 0.0
		for _, v := range want {
			m = max(m, math.Abs(float64(v)))
		}
		return check.Compare(name, got, want, check.Tol{Abs: abs * max(m, 1e-30), Rel: rel})
	}
	perTensor := func(name string, got, want []float32, abs, rel float64) {
		worst := check.Result{Case: name}
		for _, p := range host.Layout {
			r := scaled(name+" "+p.Name, got[p.Offset:p.Offset+p.Size()], want[p.Offset:p.Offset+p.Size()], abs, rel)
			if !r.OK() || r.Worst >= worst.Worst {
				worst = r
			}
			if !r.OK() {
				out = append(out, r)
			}
		}
		if worst.OK() {
			worst.Case = name + " (worst: " + worst.Case[len(name)+1:] + ")"
			worst.Elems = len(want)
			out = append(out, worst)
		}
	}

	x, nv, noise := draw()
	pred := make([]float32, n*3*h*w)
	if err := d.Forward(x, nv, pred); err != nil {
		return fail("gpunet forward", err)
	}
	out = append(out, scaled("gpunet forward eval", pred, ref.Forward(ar, x, nv, false).Data, 1e-5, 1e-5))

	loss, err := d.TrainStep(x, nv, noise, 0.5, nil)
	if err != nil {
		return fail("gpunet train step", err)
	}
	wantLoss := ref.TrainStep(ar, x, nv, noise, 0.5, nil)
	out = append(out, check.Compare("gpunet loss", []float32{loss}, []float32{wantLoss}, check.Tol{Rel: 1e-5}))
	perTensor("gpunet gradients", host.Grads, ref.Grads, 1e-4, 1e-4)
	out = append(out, scaled("gpunet BatchNorm buffers", host.Buffers(nil), ref.Buffers(nil), 1e-5, 1e-5))

	opt, refOpt := model.NewAdam(host.NumParams(), 1e-3), model.NewAdam(host.NumParams(), 1e-3)
	opt.Eps, refOpt.Eps = 1e-4, 1e-4 // see TestTraining
	if err := d.LoadAdam(opt); err != nil {
		return fail("gpunet load adam", err)
	}
	for step := range 3 {
		x, nv, noise := draw()
		tracked := host.BatchesTracked() + 1
		if _, err := d.TrainStep(x, nv, noise, 1, nil); err != nil {
			return fail("gpunet train step", err)
		}
		if err := d.Apply(opt, host.Grads, host.Buffers(nil), tracked); err != nil {
			return fail("gpunet apply", err)
		}
		ref.TrainStep(ar, x, nv, noise, 1, nil)
		ref.Apply(refOpt, ref.Grads, ref.Buffers(nil), tracked)
		// Adam divides each gradient by its own running magnitude: a small
		// gradient's rounding moves its update by a fraction of lr, whatever
		// the tensor's scale; allowed: 1% of one step
		out = append(out, check.Compare(fmt.Sprintf("gpunet params step %d", step+1), host.Params, ref.Params, check.Tol{Abs: 1e-2 * opt.LR, Rel: 1e-5}))
	}
	if err := d.Forward(x, nv, pred); err != nil {
		return fail("gpunet forward", err)
	}
	out = append(out, scaled("gpunet forward after steps", pred, ref.Forward(ar, x, nv, false).Data, 1e-5, 1e-5))
	return out
}
