// Package opcheck is the op-by-op check every compute backend passes: each
// operation of nn.Compute, on random inputs shaped as the U-Net uses them
// (channel views of concatenations, accumulated outputs, accumulated
// parameter gradients), run through the backend's own memory and compared
// with the reference kernels (nn.NewKernels) on the host. go test runs it
// on every backend (go, onednn, and the CUDA backend on its CPU shim);
// `tinct cuda selftest` runs it on a GPU.
package opcheck

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/tinct/tinct/nn"
)

// Result is one operation's comparison: the largest difference relative to
// the reference's largest magnitude (at least 1), against Tol.
type Result struct {
	Case string
	Rel  float64
	Tol  float64
	// Err is the backend's failure (its Err): the operation did not run.
	Err error
	// Mismatch says what differs where the comparison is not a number
	// (the hash's bytes, the count of training batches); "" when nothing
	// does.
	Mismatch string
}

// OK reports a pass.
func (r Result) OK() bool {
	return r.Err == nil && r.Mismatch == "" && r.Rel <= r.Tol && !math.IsNaN(r.Rel)
}

func (r Result) String() string {
	state := "ok"
	if !r.OK() {
		state = "FAIL"
	}
	switch {
	case r.Err != nil:
		return fmt.Sprintf("%-34s %-4s %v", r.Case, state, r.Err)
	case r.Mismatch != "":
		return fmt.Sprintf("%-34s %-4s %s", r.Case, state, r.Mismatch)
	}
	return fmt.Sprintf("%-34s %-4s max rel. difference %.2e (tolerance %.0e)", r.Case, state, r.Rel, r.Tol)
}

// Tols are the tolerances: products (convolutions) and reductions
// (BatchNorm, the loss) sum in another order on another backend; the
// element-wise operations and the optimizer differ at most by rounding of
// their transcendental functions.
type Tols struct{ Product, Reduce, Elementwise float64 }

// FP32 are the tolerances for float32 products.
var FP32 = Tols{Product: 5e-5, Reduce: 2e-5, Elementwise: 2e-6}

// TF32 and BF16 are the tolerances for products whose inputs are rounded
// to 10 and 7 bits of mantissa (cuBLAS's fast tf32 and bf16 modes, which
// sum in float32; the other operations stay float32): about 3.5 times
// the largest difference of products with truncated inputs on these cases
// (1.4e-3 and 8.8e-3 over six seeds; cuda/check's TestPrecisionTolerances).
var (
	TF32 = Tols{Product: 5e-3, Reduce: FP32.Reduce, Elementwise: FP32.Elementwise}
	BF16 = Tols{Product: 3e-2, Reduce: FP32.Reduce, Elementwise: FP32.Elementwise}
)

// Run checks every operation of be against the reference kernels.
func Run(be nn.Compute, seed uint64, tol Tols) []Result {
	c := &checker{be: be, ref: nn.NewKernels(), rng: rand.New(rand.NewPCG(seed, 7)), tol: tol}
	c.memory()
	c.convs()
	c.batchNorm()
	c.elementwise()
	c.vectors()
	return c.out
}

type checker struct {
	be, ref nn.Compute
	rng     *rand.Rand
	tol     Tols
	out     []Result
}

// pair is one tensor on both sides: a wide host tensor and its view, the
// backend's copy and the same view of it.
type pair struct {
	wide, view   nn.Tensor // host
	bWide, bView nn.Tensor // backend
}

// tensor makes a random [n, c+pad, h, w] tensor on both sides and views
// channels [pad/2, pad/2+c) of it.
func (c *checker) tensor(n, ch, h, w, pad int, scale float64) pair {
	p := pair{wide: nn.NewTensor(n, ch+pad, h, w)}
	for i := range p.wide.Data {
		p.wide.Data[i] = float32(scale * c.rng.NormFloat64())
	}
	p.bWide = c.be.NewTensor(n, ch+pad, h, w)
	c.be.Upload(p.bWide.Flat(), p.wide.Data)
	p.view = p.wide.Channels(pad/2, pad/2+ch)
	p.bView = p.bWide.Channels(pad/2, pad/2+ch)
	return p
}

func (c *checker) vec(n int, scale, offset float64) (nn.Vec, nn.Vec) {
	h := make([]float32, n)
	for i := range h {
		h[i] = float32(offset + scale*c.rng.NormFloat64())
	}
	b := c.be.NewVec(n)
	c.be.Upload(b, h)
	return nn.HostVec(h), b
}

// compare records the backend's values of whole tensors or vectors (so that
// a write outside a view shows) against the host's.
func (c *checker) compare(name string, got nn.Vec, want []float32, tol float64) {
	r := Result{Case: name, Tol: tol}
	g := make([]float32, got.N)
	c.be.Download(g, got)
	if r.Err = c.be.Err(); r.Err == nil {
		r.Rel = relDiff(g, want)
	}
	c.out = append(c.out, r)
}

func (c *checker) same(name string, p pair, tol float64) {
	c.compare(name, p.bWide.Flat(), p.wide.Data, tol)
}

func relDiff(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var m, d float64
	for i, w := range want {
		m = math.Max(m, math.Abs(float64(w)))
		d = math.Max(d, math.Abs(float64(got[i])-float64(w)))
		if math.IsNaN(float64(got[i])) {
			return math.NaN()
		}
	}
	return d / math.Max(1, m)
}

// memory: uploads and downloads at offsets, zeroing and copying views.
func (c *checker) memory() {
	h, b := c.vec(1000, 1, 0)
	part := make([]float32, 300)
	c.be.Download(part, b.Slice(200, 500))
	c.out = append(c.out, Result{Case: "upload, download at an offset", Tol: 0, Rel: relDiff(part, h.Data[200:500]), Err: c.be.Err()})
	x, y := c.tensor(2, 5, 4, 6, 3, 1), c.tensor(2, 5, 4, 6, 2, 1)
	c.ref.Copy(x.view, y.view)
	c.be.Copy(x.bView, y.bView)
	c.same("copy of channel views", y, 0)
	c.ref.Zero(x.view)
	c.be.Zero(x.bView)
	c.same("zero of a channel view", x, 0)
	c.ref.Add(y.view, x.view)
	c.be.Add(y.bView, x.bView)
	c.same("add into a channel view", x, 0)
}

func (c *checker) convs() {
	cases := []struct {
		n, in, out, h, w, k, xPad, yPad int
		acc                             bool
	}{
		{2, 4, 32, 16, 16, 1, 0, 64, false},  // the stem into the stem/embedding concat
		{2, 64, 32, 16, 16, 3, 0, 32, false}, // conv1 of a down block
		{2, 32, 32, 16, 16, 3, 0, 32, true},  // conv2 added to the skip
		{3, 5, 7, 6, 10, 3, 4, 2, true},      // odd sizes, views both sides
		{1, 32, 3, 16, 16, 1, 0, 0, false},   // the head
		{2, 96, 128, 4, 4, 3, 32, 0, false},  // a bottleneck block on an up concat
	}
	for _, cc := range cases {
		name := fmt.Sprintf("conv%d %d→%d %dx%d acc=%v", cc.k, cc.in, cc.out, cc.h, cc.w, cc.acc)
		rc, bc := &nn.Conv2D{In: cc.in, Out: cc.out, K: cc.k}, &nn.Conv2D{In: cc.in, Out: cc.out, K: cc.k}
		np := rc.NumParams()
		hp, bp := c.vec(np, 0.3, 0)
		hg, bg := c.vec(np, 1, 0) // gradients are added to
		rc.Bind(hp, hg)
		bc.Bind(bp, bg)
		x, y := c.tensor(cc.n, cc.in, cc.h, cc.w, cc.xPad, 1), c.tensor(cc.n, cc.out, cc.h, cc.w, cc.yPad, 1)
		c.ref.ConvForward(rc, x.view, y.view, cc.acc)
		c.be.ConvForward(bc, x.bView, y.bView, cc.acc)
		c.same(name+" forward", y, c.tol.Product)
		dy, dx := c.tensor(cc.n, cc.out, cc.h, cc.w, cc.yPad, 1), c.tensor(cc.n, cc.in, cc.h, cc.w, cc.xPad, 1)
		c.ref.ConvBackward(rc, x.view, dy.view, dx.view, cc.acc)
		c.be.ConvBackward(bc, x.bView, dy.bView, dx.bView, cc.acc)
		c.same(name+" input gradient", dx, c.tol.Product)
		c.compare(name+" weight gradients", bg, hg.Data, c.tol.Product)
		c.ref.ConvBackward(rc, x.view, dy.view, nn.Tensor{}, false)
		c.be.ConvBackward(bc, x.bView, dy.bView, nn.Tensor{}, false)
		c.compare(name+" weight gradients, no dx", bg, hg.Data, c.tol.Product)
		c.ref.ConvSiLUForward(rc, x.view, y.view)
		c.be.ConvSiLUForward(bc, x.bView, y.bView)
		c.same(name+" with SiLU", y, c.tol.Product)
	}
}

func (c *checker) batchNorm() {
	const ch = 6
	rn, bn := nn.NewBatchNorm(ch), nn.NewBatchNorm(ch)
	hr, br := c.vec(2*ch, 0.3, 0)
	for i := ch; i < 2*ch; i++ { // positive running variances
		hr.Data[i] = float32(0.5 + c.rng.Float64())
	}
	c.be.Upload(br, hr.Data)
	hs, bs := c.vec(2*ch, 0, 0)
	rn.Bind(hr, hs)
	bn.Bind(br, bs)
	x, y := c.tensor(3, ch, 5, 7, 4, 2), c.tensor(3, ch, 5, 7, 0, 1)
	for _, train := range []bool{false, true} {
		name := fmt.Sprintf("batchnorm train=%v", train)
		c.ref.BatchNormForward(rn, x.view, y.view, train)
		c.be.BatchNormForward(bn, x.bView, y.bView, train)
		c.same(name+" forward", y, c.tol.Reduce)
		c.compare(name+" running statistics", br, hr.Data, c.tol.Reduce)
	}
	if rn.NumBatchesTracked != 1 || bn.NumBatchesTracked != 1 {
		c.out = append(c.out, Result{Case: "batchnorm batches tracked", Err: c.be.Err(),
			Mismatch: fmt.Sprintf("%d and %d after one training forward, want 1", rn.NumBatchesTracked, bn.NumBatchesTracked)})
	}
	c.ref.BatchNormApply(rn, x.view, y.view)
	c.be.BatchNormApply(bn, x.bView, y.bView)
	c.same("batchnorm apply", y, c.tol.Reduce)
	dy, dx := c.tensor(3, ch, 5, 7, 0, 1), c.tensor(3, ch, 5, 7, 2, 1)
	for _, acc := range []bool{false, true} {
		c.ref.BatchNormBackward(rn, x.view, dy.view, dx.view, acc)
		c.be.BatchNormBackward(bn, x.bView, dy.bView, dx.bView, acc)
		c.same(fmt.Sprintf("batchnorm backward acc=%v", acc), dx, c.tol.Reduce)
	}
}

func (c *checker) elementwise() {
	e := c.tol.Elementwise
	x, y := c.tensor(2, 8, 6, 6, 0, 2), c.tensor(2, 8, 6, 6, 0, 1)
	c.ref.SiLUForwardSave(x.view, y.view)
	c.be.SiLUForwardSave(x.bView, y.bView)
	c.same("silu forward", y, e)
	c.same("silu saved sigmoid", x, e)
	d := c.tensor(2, 8, 6, 6, 0, 1)
	c.ref.SiLUBackwardSaved(x.view, y.view, d.view, d.view)
	c.be.SiLUBackwardSaved(x.bView, y.bView, d.bView, d.bView)
	c.same("silu backward in place", d, e)

	big, small := c.tensor(2, 3, 8, 6, 2, 1), c.tensor(2, 3, 4, 3, 4, 1)
	c.ref.AvgPool2Forward(big.view, small.view)
	c.be.AvgPool2Forward(big.bView, small.bView)
	c.same("avgpool forward", small, e)
	c.ref.AvgPool2Backward(small.view, big.view)
	c.be.AvgPool2Backward(small.bView, big.bView)
	c.same("avgpool backward (adds)", big, e)
	c.ref.Upsample2Forward(small.view, big.view)
	c.be.Upsample2Forward(small.bView, big.bView)
	c.same("upsample forward", big, e)
	c.ref.Upsample2Backward(big.view, small.view)
	c.be.Upsample2Backward(big.bView, small.bView)
	c.same("upsample backward (adds)", small, e)

	out := c.tensor(3, 8, 4, 4, 6, 1)
	nv := []float32{0.01, 0.5, 0.999}
	speeds := []float32{6.2831855, 39.64, 250.2, 1578.6}
	c.ref.Embed(nv, speeds, out.view)
	c.be.Embed(nv, speeds, out.bView)
	c.same("embedding into a channel view", out, 1e-6)

	pred, target := c.tensor(3, 3, 8, 8, 0, 1), c.tensor(3, 3, 8, 8, 0, 1)
	grad := c.tensor(3, 3, 8, 8, 0, 1)
	want := c.ref.MSE(pred.view, target.view, grad.view, 0.375)
	got := c.be.MSE(pred.bView, target.bView, grad.bView, 0.375)
	c.out = append(c.out, Result{Case: "mse loss", Tol: c.tol.Reduce, Rel: relDiff([]float32{got}, []float32{want}), Err: c.be.Err()})
	c.same("mse scaled gradient", grad, e)
	got = c.be.MSE(pred.bView, target.bView, nn.Tensor{}, 1)
	c.out = append(c.out, Result{Case: "mse loss, no gradient", Tol: c.tol.Reduce, Rel: relDiff([]float32{got}, []float32{want}), Err: c.be.Err()})
}

func (c *checker) vectors() {
	const n = 1037 // not a multiple of any vector width
	hp, bp := c.vec(n, 0.5, 0)
	hg, bg := c.vec(n, 0.1, 0)
	hm, bm := c.vec(n, 0.01, 0)
	hv, bv := c.vec(n, 0, 0)
	for i := range hv.Data {
		hv.Data[i] = float32(1e-4 * c.rng.Float64())
	}
	c.be.Upload(bv, hv.Data)
	for step := range 3 {
		bc1, bc2 := 1-math.Pow(0.9, float64(step+1)), 1-math.Pow(0.999, float64(step+1))
		k := nn.AdamConsts{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, StepSize: float32(1e-3 / bc1), BC2Sqrt: float32(math.Sqrt(bc2))}
		c.ref.Adam(hp, hg, hm, hv, k)
		c.be.Adam(bp, bg, bm, bv, k)
	}
	c.compare("adam weights (3 steps)", bp, hp.Data, c.tol.Elementwise)
	c.compare("adam second moments", bv, hv.Data, c.tol.Elementwise)
	ha, ba := c.vec(n, 0.5, 0)
	c.ref.EMA(ha, hp, 0.999)
	c.be.EMA(ba, bp, 0.999)
	c.compare("ema", ba, ha.Data, c.tol.Elementwise)
	c.ref.CopyVec(hg.Slice(10, 20), ha.Slice(100, 110))
	c.be.CopyVec(bg.Slice(10, 20), ba.Slice(100, 110))
	c.ref.ZeroVec(ha.Slice(500, 600))
	c.be.ZeroVec(ba.Slice(500, 600))
	c.compare("copy and zero of vector slices", ba, ha.Data, 0)

	// the checksum's bytes: equal values hash equally on every backend
	hh, bh := sha256.New(), sha256.New()
	c.ref.Hash(hh, hg.Slice(3, n))
	c.be.Hash(bh, bg.Slice(3, n))
	r := Result{Case: "hash of a vector slice", Err: c.be.Err()}
	if r.Err == nil && !bytes.Equal(hh.Sum(nil), bh.Sum(nil)) {
		r.Mismatch = "SHA-256 differs from the host's for the same values"
	}
	c.out = append(c.out, r)
}
