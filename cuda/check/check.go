// Package check runs every kernel of package cuda on random inputs and
// compares the results with tinct's Go CPU ops (nn/ and model/) (Run),
// then a tiny network on a cuda.Compute against the same network on the
// Go kernels, through model's own API (Network). Both run on any
// cuda.Backend: the CPU shim (package cuda/shim), which the tests run on
// every machine with g++, and a GPU (`tinct cuda selftest`,
// scripts/gpu-check.sh).
package check

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// Tol is an element-wise tolerance: |got − want| ≤ Abs + Rel·|want|.
type Tol struct{ Abs, Rel float64 }

// Result is one comparison.
type Result struct {
	Case   string
	Elems  int
	MaxAbs float64 // largest |got − want|
	Worst  float64 // largest |got − want| / (Abs + Rel·|want|): ≤ 1 passes
	Tol    Tol
	Err    error // a failure to run
}

// OK reports a pass.
func (r Result) OK() bool { return r.Err == nil && r.Worst <= 1 && !math.IsNaN(r.Worst) }

func (r Result) String() string {
	state := "ok"
	if !r.OK() {
		state = "FAIL"
	}
	if r.Err != nil {
		return fmt.Sprintf("%-26s %-4s %v", r.Case, state, r.Err)
	}
	return fmt.Sprintf("%-26s %-4s %9d values  max |Δ| %.3g  (tol %.0e + %.0e·|ref|, worst %.2f of it)", r.Case, state, r.Elems, r.MaxAbs, r.Tol.Abs, r.Tol.Rel, r.Worst)
}

// Compare measures got against want.
func Compare(name string, got, want []float32, tol Tol) Result {
	r := Result{Case: name, Elems: len(want), Tol: tol}
	if len(got) != len(want) {
		r.Err = fmt.Errorf("%d values, want %d", len(got), len(want))
		return r
	}
	for i, w := range want {
		d := math.Abs(float64(got[i]) - float64(w))
		if math.IsNaN(float64(got[i])) != math.IsNaN(float64(w)) {
			d = math.Inf(1)
		}
		r.MaxAbs = max(r.MaxAbs, d)
		if d > 0 {
			r.Worst = max(r.Worst, d/(tol.Abs+tol.Rel*math.Abs(float64(w))))
		}
	}
	return r
}

// run holds one case's backend, random source, buffers and results.
type run struct {
	b     cuda.Backend
	rng   *rand.Rand
	out   []Result
	err   error // the first failure to run; later steps of a case are skipped
	owned []cuda.Mem
}

func (r *run) fail(name string, err error) {
	r.out = append(r.out, Result{Case: name, Err: err})
}

func (r *run) randn(n int, scale, mean float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = mean + scale*float32(r.rng.NormFloat64())
	}
	return x
}

// pair is a tensor on the host and its copy on the backend: a channel
// range [pad, pad+c) of a wider tensor, so that views with strides are
// exercised and writes outside the view are caught (the whole buffer is
// compared).
type pair struct {
	host nn.Tensor
	full []float32
	mem  cuda.Mem
	dev  cuda.View
}

func (r *run) tensor(n, c, h, w, pad int, scale, mean float32) pair {
	wide := c + 2*pad
	full := r.randn(n*wide*h*w, scale, mean)
	t := nn.TensorFrom(full, n, wide, h, w).Channels(pad, pad+c)
	m := r.buf(full)
	p := pair{host: t, full: full, mem: m}
	if m != nil {
		p.dev = cuda.View{Mem: m.At(pad * h * w), N: n, C: c, H: h, W: w, Stride: wide * h * w}
	}
	return p
}

// buf is a new backend buffer holding a copy of data.
func (r *run) buf(data []float32) cuda.Mem {
	if r.err != nil {
		return nil
	}
	m, err := r.b.Alloc(len(data))
	if r.err = err; err == nil {
		r.owned = append(r.owned, m)
		r.err = r.b.Upload(m, data)
	}
	return m
}

// read copies n floats of m back.
func (r *run) read(m cuda.Mem, n int) ([]float32, error) {
	out := make([]float32, n)
	return out, r.b.Download(out, m)
}

// free releases the case's buffers once the backend is done with them.
func (r *run) free() {
	r.b.Sync()
	for _, m := range r.owned {
		r.b.Free(m)
	}
	r.owned = nil
}

// check compares a backend buffer with the host reference.
func (r *run) check(name string, m cuda.Mem, want []float32, tol Tol) {
	if r.err != nil {
		r.fail(name, r.err)
		return
	}
	if err := r.b.Sync(); err != nil {
		r.fail(name, err)
		return
	}
	got, err := r.read(m, len(want))
	if err != nil {
		r.fail(name, err)
		return
	}
	r.out = append(r.out, Compare(name, got, want, tol))
}

func (r *run) do(err error) {
	if r.err == nil {
		r.err = err
	}
}

// Run runs every case on b with inputs from seed. Each case starts afresh
// after a failure to run, so one broken kernel does not hide the others.
func Run(b cuda.Backend, seed uint64) []Result {
	var all []Result
	for _, c := range cases {
		r := &run{b: b, rng: rand.New(rand.NewPCG(seed, uint64(len(all))))}
		c(r)
		r.free()
		all = append(all, r.out...)
	}
	return all
}

var (
	tight = Tol{1e-6, 1e-6}
	loose = Tol{1e-5, 1e-5}
)

var cases = []func(r *run){
	func(r *run) {
		x, y := r.tensor(2, 3, 5, 7, 1, 4, 0), r.tensor(2, 3, 5, 7, 2, 1, 0)
		nn.SiLUForward(x.host, y.host)
		r.do(cuda.SiLUForward(r.b, x.dev, y.dev))
		r.check("silu_forward", y.mem, y.full, tight)
	},
	func(r *run) {
		x, y := r.tensor(2, 3, 6, 5, 2, 30, 0), r.tensor(2, 3, 6, 5, 0, 1, 0)
		nn.SiLUForwardSave(x.host, y.host)
		r.do(cuda.SiLUForwardSave(r.b, x.dev, y.dev))
		r.check("silu_forward_save σ", x.mem, x.full, tight)
		r.check("silu_forward_save y", y.mem, y.full, tight)
	},
	func(r *run) {
		x, dy, dx := r.tensor(3, 2, 4, 4, 1, 4, 0), r.tensor(3, 2, 4, 4, 0, 1, 0), r.tensor(3, 2, 4, 4, 1, 1, 0)
		nn.SiLUBackward(x.host, dy.host, dx.host)
		r.do(cuda.SiLUBackward(r.b, x.dev, dy.dev, dx.dev))
		r.check("silu_backward", dx.mem, dx.full, tight)
	},
	func(r *run) {
		// dx aliasing dy, as the U-Net's block backward calls it
		sig, y, dy := r.tensor(2, 4, 3, 5, 1, 0.3, 0.5), r.tensor(2, 4, 3, 5, 0, 2, 0), r.tensor(2, 4, 3, 5, 2, 1, 0)
		nn.SiLUBackwardSaved(sig.host, y.host, dy.host, dy.host)
		r.do(cuda.SiLUBackwardSaved(r.b, sig.dev, y.dev, dy.dev, dy.dev))
		r.check("silu_backward_saved", dy.mem, dy.full, tight)
	},
	func(r *run) {
		for _, train := range []bool{true, false} {
			x, y := r.tensor(3, 5, 6, 6, 1, 3, 2), r.tensor(3, 5, 6, 6, 2, 1, 0)
			bn, dbn := r.batchNorm(5)
			bn.Forward(x.host, y.host, train)
			r.do(dbn.Forward(r.b, x.dev, y.dev, train))
			name := "bn_forward train"
			if !train {
				name = "bn_forward eval"
			}
			r.check(name, y.mem, y.full, loose)
			r.check(name+" running mean", dbn.RunningMean, bn.RunningMean, tight)
			r.check(name+" running var", dbn.RunningVar, bn.RunningVar, tight)
		}
	},
	func(r *run) {
		for _, acc := range []bool{true, false} {
			x, dy, dx := r.tensor(4, 3, 5, 4, 1, 2, -1), r.tensor(4, 3, 5, 4, 0, 1, 0), r.tensor(4, 3, 5, 4, 2, 1, 0)
			bn, dbn := r.batchNorm(3)
			scratch := nn.NewTensor(4, 3, 5, 4)
			bn.Forward(x.host, scratch, true)
			if !acc { // nn adds: from zero, it writes
				dx.host.Zero()
			}
			bn.Backward(x.host, dy.host, dx.host)
			ds := r.tensor(4, 3, 5, 4, 0, 0, 0)
			r.do(dbn.Forward(r.b, x.dev, ds.dev, true))
			r.do(dbn.Backward(r.b, x.dev, dy.dev, dx.dev, acc))
			// the whole buffer: the view overwritten or added to, the rest untouched
			r.check(fmt.Sprintf("bn_backward acc=%v", acc), dx.mem, dx.full, loose)
		}
	},
	func(r *run) {
		x, y := r.tensor(2, 3, 8, 6, 1, 1, 0), r.tensor(2, 3, 4, 3, 1, 1, 0)
		nn.AvgPool2Forward(x.host, y.host)
		r.do(cuda.AvgPool2Forward(r.b, x.dev, y.dev))
		r.check("avgpool2_forward", y.mem, y.full, tight)
		dy, dx := r.tensor(2, 3, 4, 3, 2, 1, 0), r.tensor(2, 3, 8, 6, 0, 1, 0)
		nn.AvgPool2Backward(dy.host, dx.host)
		r.do(cuda.AvgPool2Backward(r.b, dy.dev, dx.dev))
		r.check("avgpool2_backward", dx.mem, dx.full, tight)
	},
	func(r *run) {
		for _, s := range [][2]int{{5, 4}, {1, 1}, {2, 1}, {1, 3}} {
			h, w := s[0], s[1]
			x, y := r.tensor(2, 3, h, w, 1, 1, 0), r.tensor(2, 3, 2*h, 2*w, 1, 1, 0)
			nn.Upsample2Forward(x.host, y.host)
			r.do(cuda.Upsample2Forward(r.b, x.dev, y.dev))
			r.check(fmt.Sprintf("upsample2_forward %dx%d", h, w), y.mem, y.full, tight)
			dy, dx := r.tensor(2, 3, 2*h, 2*w, 0, 1, 0), r.tensor(2, 3, h, w, 2, 1, 0)
			nn.Upsample2Backward(dy.host, dx.host)
			r.do(cuda.Upsample2Backward(r.b, dy.dev, dx.dev))
			r.check(fmt.Sprintf("upsample2_backward %dx%d", h, w), dx.mem, dx.full, Tol{2e-6, 2e-6})
		}
	},
	func(r *run) {
		src, dst := r.tensor(3, 4, 3, 3, 1, 1, 0), r.tensor(3, 4, 3, 3, 2, 1, 0)
		src.host.CopyTo(dst.host)
		r.do(cuda.Copy(r.b, src.dev, dst.dev))
		r.check("copy_view", dst.mem, dst.full, Tol{})
		acc := r.tensor(3, 4, 3, 3, 0, 1, 0)
		nn.AddTo(src.host, acc.host)
		r.do(cuda.AddTo(r.b, src.dev, acc.dev))
		r.check("add_view", acc.mem, acc.full, Tol{})
		f := r.tensor(2, 2, 3, 3, 1, 1, 0)
		for n := range 2 {
			for c := range 2 {
				for i := range f.host.Plane(n, c) {
					f.host.Plane(n, c)[i] = 0.25
				}
			}
		}
		r.do(cuda.Fill(r.b, f.dev, 0.25))
		r.check("fill_view", f.mem, f.full, Tol{})
		sc := r.tensor(2, 3, 2, 5, 1, 1, 0)
		for n := range 2 {
			for c := range 3 {
				for i := range sc.host.Plane(n, c) {
					sc.host.Plane(n, c)[i] *= -0.75
				}
			}
		}
		r.do(cuda.Scale(r.b, sc.dev, -0.75))
		r.check("scale_view", sc.mem, sc.full, Tol{})
	},
	func(r *run) {
		// model.UNet.embed's arithmetic, with DefaultConfig's speeds
		const half = 16
		n, hw := 3, 4*5
		out := r.tensor(n, 2*half, 4, 5, 3, 0, 0)
		noiseVar := make([]float32, n)
		for i := range noiseVar {
			noiseVar[i] = float32(r.rng.Float64())
		}
		speeds := make([]float32, half)
		step := math.Log(1000) / float64(half-1)
		for k := range speeds {
			speeds[k] = float32(2 * math.Pi * math.Exp(float64(k)*step))
		}
		for i := range n {
			for k, w := range speeds {
				s, c := math.Sincos(float64(noiseVar[i] * w))
				for p := range hw {
					out.host.Plane(i, k)[p] = float32(s)
					out.host.Plane(i, half+k)[p] = float32(c)
				}
			}
		}
		r.do(cuda.Embed(r.b, r.buf(noiseVar), r.buf(speeds), half, out.dev))
		r.check("embed", out.mem, out.full, Tol{1e-6, 0})
	},
	func(r *run) {
		n, h, w := 3, 4, 6
		hw := h * w
		x0, gray := r.randn(n*3*hw, 0.5, 0), r.randn(n*hw, 0.5, 0)
		eps := make([]float32, n*3*hw)
		input := make([]float32, n*4*hw)
		signal, noise := make([]float32, n), make([]float32, n)
		for i := range n {
			seed := r.rng.Uint64()
			model.NoisyExample(x0[i*3*hw:][:3*hw], gray[i*hw:][:hw], eps[i*3*hw:][:3*hw], input[i*4*hw:][:4*hw], rand.New(rand.NewPCG(seed, 7)))
			// the same draw of the time gives the rates NoisyExample used
			s, ns := model.RatesAt(rand.New(rand.NewPCG(seed, 7)).IntN(model.T))
			signal[i], noise[i] = float32(s), float32(ns)
		}
		in := r.buf(make([]float32, n*4*hw))
		r.do(cuda.NoiseForm(r.b, r.buf(x0), r.buf(gray), r.buf(eps), r.buf(signal), r.buf(noise), cuda.Contig(in, n, 4, h, w)))
		r.check("noise_form", in, input, tight)
	},
	func(r *run) {
		for _, mult := range []float32{1, 0.37} {
			pred, target, grad := r.tensor(3, 3, 9, 7, 1, 1, 0), r.tensor(3, 3, 9, 7, 0, 1, 0), r.tensor(3, 3, 9, 7, 2, 1, 0)
			loss := nn.MSE(pred.host, target.host, grad.host)
			if mult != 1 {
				for n := range grad.host.N {
					img := grad.host.Image(n)
					for i := range img {
						img[i] *= mult
					}
				}
			}
			parts, sum := r.buf(make([]float32, 2*cuda.MaxPartials)), r.buf(make([]float32, 2))
			r.do(cuda.MSE(r.b, pred.dev, target.dev, grad.dev, mult, parts, sum))
			name := fmt.Sprintf("mse grad ×%g", mult)
			r.check(name, grad.mem, grad.full, tight)
			if r.err != nil {
				continue
			}
			got, err := r.read(sum, 2)
			if err != nil {
				r.fail("mse loss", err)
				continue
			}
			total := math.Float64frombits(uint64(math.Float32bits(got[0])) | uint64(math.Float32bits(got[1]))<<32)
			r.out = append(r.out, Compare(fmt.Sprintf("mse loss ×%g", mult), []float32{float32(total / float64(pred.host.N*pred.host.C*pred.host.HW()))}, []float32{loss}, tight))
		}
	},
	func(r *run) {
		n := 1000
		opt := model.NewAdam(n, 3e-4)
		params := r.randn(n, 1, 0)
		p, m, v := r.buf(params), r.buf(make([]float32, n)), r.buf(make([]float32, n))
		for step := range 3 {
			grads := r.randn(n, 0.1, 0)
			if step == 2 {
				grads[0], grads[1] = 0, 1e-12
			}
			opt.Update(params, grads)
			r.do(cuda.Adam(r.b, p, r.buf(grads), m, v, n, adamConsts(opt)))
		}
		r.check("adam params (3 steps)", p, params, tight)
		r.check("adam m", m, opt.M, tight)
		r.check("adam v", v, opt.V, tight)
	},
	func(r *run) {
		cfg := model.Config{Widths: []int{4, 8}, BlockDepth: 1, EmbedDims: 2}
		avg, err1 := model.New(cfg)
		live, err2 := model.New(cfg)
		if err1 != nil || err2 != nil {
			r.fail("ema", fmt.Errorf("model: %v %v", err1, err2))
			return
		}
		copy(avg.Params, r.randn(len(avg.Params), 1, 0))
		copy(live.Params, r.randn(len(live.Params), 1, 0))
		a, l := r.buf(avg.Params), r.buf(live.Params)
		rule := model.EMA{Decay: 0.999, CopyBuffers: true}
		rule.Update(avg, live)
		r.do(cuda.EMA(r.b, a, l, len(avg.Params), float32(rule.Decay)))
		r.check("ema", a, avg.Params, tight)
	},
	func(r *run) {
		// sizes past one pass of a 16-block grid (4096 threads)
		x, y := r.tensor(3, 5, 30, 31, 1, 3, 0), r.tensor(3, 5, 30, 31, 0, 1, 0)
		nn.SiLUForward(x.host, y.host)
		r.do(cuda.SiLUForward(r.b, x.dev, y.dev))
		r.check("silu_forward large", y.mem, y.full, tight)
		t := r.tensor(3, 5, 30, 31, 2, 1, 0)
		loss := nn.MSE(y.host, t.host, x.host)
		parts, sum := r.buf(make([]float32, 2*cuda.MaxPartials)), r.buf(make([]float32, 2))
		r.do(cuda.MSE(r.b, y.dev, t.dev, x.dev, 1, parts, sum))
		r.check("mse grad large", x.mem, x.full, tight)
		if r.err == nil {
			got, err := r.read(sum, 2)
			if err != nil {
				r.fail("mse loss large", err)
				return
			}
			total := math.Float64frombits(uint64(math.Float32bits(got[0])) | uint64(math.Float32bits(got[1]))<<32)
			r.out = append(r.out, Compare("mse loss large", []float32{float32(total / float64(y.host.N*y.host.C*y.host.HW()))}, []float32{loss}, tight))
		}
	},
	convForward(3, false), convForward(3, true), convForward(1, false), convForward(1, true),
	convBackward(3, false), convBackward(3, true), convBackward(1, false), convBackward(1, true),
}

// batchNorm returns a host layer and its backend copy with the same random
// running statistics.
func (r *run) batchNorm(c int) (*nn.BatchNorm, *cuda.BatchNorm) {
	bn := nn.NewBatchNorm(c)
	copy(bn.RunningMean, r.randn(c, 0.5, 0))
	for i := range bn.RunningVar {
		bn.RunningVar[i] = 0.5 + float32(r.rng.Float64())
	}
	d := &cuda.BatchNorm{C: c, Eps: bn.Eps, Momentum: bn.Momentum,
		Mean: r.buf(make([]float32, c)), InvStd: r.buf(make([]float32, c)),
		RunningMean: r.buf(bn.RunningMean), RunningVar: r.buf(bn.RunningVar)}
	return bn, d
}

// conv returns a host layer and its backend copy with the same random
// weights and gradients.
func (r *run) conv(k, in, out int) (*nn.Conv2D, *cuda.Conv, []float32) {
	c := &nn.Conv2D{In: in, Out: out, K: k}
	params := r.randn(c.NumParams(), 0.3, 0)
	grads := r.randn(c.NumParams(), 0.1, 0)
	c.Bind(nn.HostVec(params), nn.HostVec(grads))
	nw := out * in * k * k
	g := r.buf(grads)
	d := &cuda.Conv{In: in, Out: out, K: k, W: r.buf(c.Weight), B: r.buf(c.Bias)}
	if g != nil {
		d.GW, d.GB = g, g.At(nw)
	}
	return c, d, grads
}

func convForward(k int, acc bool) func(r *run) {
	return func(r *run) {
		n, in, out, h, w := 2, 5, 6, 7, 5
		c, d, _ := r.conv(k, in, out)
		x, y := r.tensor(n, in, h, w, 1, 1, 0), r.tensor(n, out, h, w, 2, 1, 0)
		var ws nn.Workspace
		c.Forward(&ws, x.host, y.host, acc)
		col := r.buf(make([]float32, max(1, d.ColFloats(n, h, w))))
		r.do(d.Forward(r.b, x.dev, y.dev, col, acc))
		r.check(fmt.Sprintf("conv%dx%d forward acc=%v", k, k, acc), y.mem, y.full, Tol{2e-5, 2e-5})
	}
}

func convBackward(k int, acc bool) func(r *run) {
	return func(r *run) {
		n, in, out, h, w := 3, 4, 5, 6, 5
		c, d, grads := r.conv(k, in, out)
		x, dy, dx := r.tensor(n, in, h, w, 1, 1, 0), r.tensor(n, out, h, w, 2, 1, 0), r.tensor(n, in, h, w, 1, 1, 0)
		var ws nn.Workspace
		c.Backward(&ws, x.host, dy.host, dx.host, acc)
		col := r.buf(make([]float32, max(1, d.ColFloats(n, h, w))))
		rot := r.buf(make([]float32, max(1, d.RotFloats())))
		r.do(d.Backward(r.b, x.dev, dy.dev, dx.dev, col, rot, acc))
		name := fmt.Sprintf("conv%dx%d backward acc=%v", k, k, acc)
		r.check(name+" dW,db", d.GW, grads, Tol{5e-5, 5e-5})
		r.check(name+" dx", dx.mem, dx.full, Tol{2e-5, 2e-5})
	}
}

// adamConsts is the constants of opt's last step as model.Adam computed
// them (in float64, rounded once), which it does not export.
func adamConsts(opt *model.Adam) nn.AdamConsts {
	bc1 := 1 - math.Pow(opt.Beta1, float64(opt.Step))
	bc2 := 1 - math.Pow(opt.Beta2, float64(opt.Step))
	return nn.AdamConsts{Beta1: float32(opt.Beta1), Beta2: float32(opt.Beta2), Eps: float32(opt.Eps),
		StepSize: float32(opt.LR / bc1), BC2Sqrt: float32(math.Sqrt(bc2))}
}
