package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// oneDNNOrSkip returns a oneDNN backend instance, or skips where the
// library is missing (CI has Debian's libdnnl2, which python3-torch pulls in).
func oneDNNOrSkip(t testing.TB) Compute {
	t.Helper()
	c, err := NewCompute("onednn")
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	return c
}

// relDiff is max|a−b| over max(1, max|b|).
func relDiff(a, b []float32) float64 {
	var m float64
	for _, v := range b {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return maxAbsDiff(a, b) / math.Max(1, m)
}

// convCase is one convolution as the U-Net runs it: x and y may be channel
// ranges of wider tensors (the concatenations), y may be added to.
type convCase struct {
	n, in, out, h, w, k int
	xPad, yPad          int // extra channels around the views
	accumulate          bool
}

func (cc convCase) tensors(rng *rand.Rand) (c *Conv2D, x, y, dy, dx Tensor) {
	c = &Conv2D{In: cc.in, Out: cc.out, K: cc.k}
	np := c.NumParams()
	c.Bind(HostVec(randSlice(rng, np, 0.3)), HostVec(randSlice(rng, np, 1)))
	view := func(ch, pad int) Tensor {
		return randTensor(rng, cc.n, ch+pad, cc.h, cc.w).Channels(pad/2, pad/2+ch)
	}
	return c, view(cc.in, cc.xPad), view(cc.out, cc.yPad), view(cc.out, cc.yPad), view(cc.in, cc.xPad)
}

func cloneTensor(t Tensor) Tensor {
	c := t
	c.Data = append([]float32(nil), t.Data...)
	return c
}

// TestOneDNNConv checks the oneDNN backend's convolutions, forward and
// backward, against the reference kernels on the shapes the network uses:
// 1×1 and 3×3, channel views of concatenations, accumulated outputs,
// accumulated parameter gradients.
func TestOneDNNConv(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			dn := oneDNNOrSkip(t)
			dn.(*oneDNNCompute).allConvs = true
			if chunked { // two images per primitive call, and remainders
				dn.(*oneDNNCompute).chunkImages = 2
			}
			testConvAgainst(t, dn)
		})
	}
}

func testConvAgainst(t *testing.T, dn Compute) {
	ref := NewKernels()
	cases := []convCase{
		{2, 4, 32, 16, 16, 1, 0, 64, false},  // stem into the stem/embedding concat
		{2, 64, 32, 16, 16, 3, 0, 32, false}, // conv1 of a down block
		{2, 32, 32, 16, 16, 3, 0, 32, true},  // conv2 added to the skip
		{2, 64, 32, 8, 8, 1, 0, 0, false},    // a skip 1×1
		{3, 5, 7, 6, 10, 3, 4, 2, true},      // odd sizes
		{1, 32, 3, 16, 16, 1, 0, 0, false},   // the head
		{2, 96, 128, 4, 4, 3, 32, 0, false},  // a bottleneck block
	}
	for i, cc := range cases {
		for _, withDx := range []bool{true, false} {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			c, x, y, dy, dx := cc.tensors(rng)
			y2, dx2 := cloneTensor(y), cloneTensor(dx)
			gw, gb := append([]float32(nil), c.GradW...), append([]float32(nil), c.GradB...)

			ref.ConvForward(c, x, y, cc.accumulate)
			dn.ConvForward(c, x, y2, cc.accumulate)
			if d := relDiff(y2.Data, y.Data); d > 2e-5 {
				t.Fatalf("case %d %+v: forward differs by %.3g", i, cc, d)
			}
			if !withDx {
				dx, dx2 = Tensor{}, Tensor{}
			}
			ref.ConvBackward(c, x, dy, dx, cc.accumulate)
			gwRef, gbRef := append([]float32(nil), c.GradW...), append([]float32(nil), c.GradB...)
			copy(c.GradW, gw)
			copy(c.GradB, gb)
			dn.ConvBackward(c, x, dy, dx2, cc.accumulate)
			if d := relDiff(c.GradW, gwRef); d > 2e-5 {
				t.Fatalf("case %d %+v: weight gradient differs by %.3g", i, cc, d)
			}
			if d := relDiff(c.GradB, gbRef); d > 2e-5 {
				t.Fatalf("case %d %+v: bias gradient differs by %.3g", i, cc, d)
			}
			if withDx {
				if d := relDiff(dx2.Data, dx.Data); d > 2e-5 {
					t.Fatalf("case %d %+v: input gradient differs by %.3g", i, cc, d)
				}
			}
		}
	}
	t.Logf("%s agrees with %s", dn.Name(), ref.Name())
}

// TestOneDNNConvAgainstNaive ties the oneDNN forward to the naive
// definition too, not only to the kernels.
func TestOneDNNConvAgainstNaive(t *testing.T) {
	dn := oneDNNOrSkip(t)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, k := range []int{1, 3} {
		c := &Conv2D{In: 3, Out: 5, K: k}
		np := c.NumParams()
		c.Bind(HostVec(randSlice(rng, np, 0.5)), HostVec(make([]float32, np)))
		x := randTensor(rng, 2, 3, 7, 9)
		y := NewTensor(2, 5, 7, 9)
		dn.ConvForward(c, x, y, false)
		if d := maxAbsDiff(y.Data, naiveConv(x, c.Weight, c.Bias, 5, k).Data); d > 1e-5 {
			t.Fatalf("k=%d: oneDNN convolution differs from the naive one by %g", k, d)
		}
	}
}

// TestComputeFallback: with no oneDNN library the backend is the reference
// one; asked for by name, the error names the file that is missing.
func TestComputeFallback(t *testing.T) {
	if _, err := openDNNL("libdnnl-missing.so.2"); err == nil || !strings.Contains(err.Error(), "libdnnl-missing.so.2") {
		t.Fatalf("loading a missing library: %v", err)
	}
	c, err := newComputeWith("onednn", func() (*dnnlAPI, error) { return openDNNL("libdnnl-missing.so.2") })
	if err == nil || c == nil || !strings.HasPrefix(c.Name(), "go") || !strings.Contains(err.Error(), "using go") {
		t.Fatalf("fallback: backend %v, error %v", c, err)
	}
	// "auto" (and no name with $TINCT_BACKEND unset) falls back quietly
	t.Setenv("TINCT_BACKEND", "")
	for _, name := range []string{"auto", ""} {
		c, err := newComputeWith(name, func() (*dnnlAPI, error) { return openDNNL("libdnnl-missing.so.2") })
		if err != nil || c == nil || !strings.HasPrefix(c.Name(), "go") {
			t.Fatalf("%q without oneDNN: backend %v, error %v", name, c, err)
		}
	}
	if OneDNNError() == nil {
		// and takes oneDNN's primitives where the library loads
		for _, name := range []string{"auto", ""} {
			if c, err := NewCompute(name); err != nil || !strings.HasPrefix(c.Name(), "onednn") {
				t.Fatalf("%q with oneDNN: backend %v, error %v", name, c, err)
			}
		}
	}
	if _, err := NewCompute("nope"); err == nil {
		t.Fatal("an unknown backend name was accepted")
	}
	if c, err := NewCompute("go"); err != nil || !strings.HasPrefix(c.Name(), "go") {
		t.Fatalf("go backend: %v %v", c, err)
	}
}

// unetConvs are the convolutions of the default U-Net (widths 32, 64, 96,
// 128, two blocks per level) as in, out, kernel and level (a level halves
// the image side), for BenchmarkConv.
var unetConvs = [][4]int{
	{4, 32, 1, 0}, {32, 3, 1, 0}, // stem, head
	{64, 32, 1, 0}, {64, 32, 3, 0}, {32, 32, 3, 0}, // downs.0
	{32, 64, 1, 1}, {32, 64, 3, 1}, {64, 64, 3, 1}, // downs.1
	{64, 96, 1, 2}, {64, 96, 3, 2}, {96, 96, 3, 2}, // downs.2
	{96, 128, 1, 3}, {96, 128, 3, 3}, {128, 128, 3, 3}, // mids
	{224, 96, 1, 2}, {224, 96, 3, 2}, {192, 96, 1, 2}, {192, 96, 3, 2}, // ups.0
	{160, 64, 1, 1}, {160, 64, 3, 1}, {128, 64, 1, 1}, {128, 64, 3, 1}, // ups.1
	{96, 32, 1, 0}, {96, 32, 3, 0}, // ups.2 (its second block: 64→32, above)
}

// BenchmarkConv times each convolution of the U-Net at 128² (or
// $TINCT_BENCH_SIZE), forward and backward (weights and input gradient), on
// both backends (oneDNN also with direct convolutions only), at batch
// $TINCT_BENCH_BATCH (default 8).
func BenchmarkConv(b *testing.B) {
	n, size := 8, 128
	if v, err := strconv.Atoi(os.Getenv("TINCT_BENCH_BATCH")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("TINCT_BENCH_SIZE")); err == nil && v > 0 {
		size = v
	}
	for _, l := range unetConvs {
		cc := convCase{n: n, in: l[0], out: l[1], k: l[2], h: size >> l[3], w: size >> l[3]}
		for _, name := range []string{"go", "onednn", "onednn-direct"} {
			be, err := NewCompute(strings.TrimSuffix(name, "-direct"))
			if err != nil {
				b.Skip(err)
			}
			if o, ok := be.(*oneDNNCompute); ok {
				o.noWinograd = strings.HasSuffix(name, "-direct")
			}
			rng := rand.New(rand.NewPCG(1, 1))
			c, x, y, dy, dx := cc.tensors(rng)
			label := fmt.Sprintf("%dx%d_%d-%d_%d²_b%d/%s", cc.k, cc.k, cc.in, cc.out, cc.h, cc.n, name)
			b.Run(label+"/fwd", func(b *testing.B) {
				for range b.N {
					be.ConvForward(c, x, y, cc.accumulate)
				}
			})
			b.Run(label+"/bwd", func(b *testing.B) {
				for range b.N {
					be.ConvBackward(c, x, dy, dx, false)
				}
			})
		}
	}
}

// toBlocked copies NCHW t into a new nChw{bs}c tensor (C a multiple of bs):
// element (n, c, y, x) at ((n·C/bs + c/bs)·H·W + y·W + x)·bs + c%bs.
func toBlocked(t Tensor, bs int) Tensor {
	b := NewTensor(t.N, t.C, t.H, t.W)
	b.Blocked = bs
	hw := t.HW()
	for n := range t.N {
		for c := range t.C {
			p := t.Plane(n, c)
			base := (n*t.C/bs + c/bs) * hw * bs
			for i, v := range p {
				b.Data[base+i*bs+c%bs] = v
			}
		}
	}
	return b
}

func fromBlocked(b Tensor) Tensor {
	t := NewTensor(b.N, b.C, b.H, b.W)
	hw, bs := b.HW(), b.Blocked
	for n := range b.N {
		for c := range b.C {
			p := t.Plane(n, c)
			base := (n*b.C/bs + c/bs) * hw * bs
			for i := range p {
				p[i] = b.Data[base+i*bs+c%bs]
			}
		}
	}
	return t
}

// TestOneDNNConvBlocked: convolutions whose input or output (and its
// gradient) is in nChw8c or nChw16c, as a block's inner activations are on
// oneDNN (whichever this CPU's convolutions run in), against the reference
// on the same values in NCHW.
func TestOneDNNConvBlocked(t *testing.T) {
	dn := oneDNNOrSkip(t)
	ref := NewKernels()
	for _, bs := range []int{8, 16} {
		for _, xb := range []bool{false, true} {
			for _, yb := range []bool{false, true} {
				for _, acc := range []bool{false, true} {
					rng := rand.New(rand.NewPCG(7, 7))
					cc := convCase{n: 3, in: 32, out: 16, h: 6, w: 10, k: 3, accumulate: acc}
					c, x, y, dy, dx := cc.tensors(rng)
					x, y, dy, dx = cloneTensor(x.Channels(0, 32)), cloneTensor(y), cloneTensor(dy), cloneTensor(dx)
					// dense copies, then the layouts under test
					x, dx = denseCopy(x), denseCopy(dx)
					y, dy = denseCopy(y), denseCopy(dy)
					bx, by, bdy, bdx := x, denseCopy(y), dy, denseCopy(dx)
					if xb {
						bx, bdx = toBlocked(x, bs), toBlocked(dx, bs)
					}
					if yb {
						by, bdy = toBlocked(y, bs), toBlocked(dy, bs)
					}
					gw := append([]float32(nil), c.GradW...)
					ref.ConvForward(c, x, y, acc)
					dn.ConvForward(c, bx, by, acc)
					ref.ConvBackward(c, x, dy, dx, acc)
					gwRef := append([]float32(nil), c.GradW...)
					copy(c.GradW, gw)
					dn.ConvBackward(c, bx, bdy, bdx, acc)
					if yb {
						by = fromBlocked(by)
					}
					if xb {
						bdx = fromBlocked(bdx)
					}
					if d := relDiff(by.Data, y.Data); d > 2e-5 {
						t.Fatalf("nChw%dc: x blocked %v, y blocked %v, accumulate %v: forward differs by %.3g", bs, xb, yb, acc, d)
					}
					if d := relDiff(bdx.Data, dx.Data); d > 2e-5 {
						t.Fatalf("nChw%dc: x blocked %v, y blocked %v, accumulate %v: input gradient differs by %.3g", bs, xb, yb, acc, d)
					}
					if d := relDiff(c.GradW, gwRef); d > 2e-5 {
						t.Fatalf("nChw%dc: x blocked %v, y blocked %v: weight gradient differs by %.3g", bs, xb, yb, d)
					}
				}
			}
		}
	}
	want := 8
	if hasAVX512() {
		want = 16
	}
	if got := dn.ActivationBlock(32); got != want {
		t.Fatalf("ActivationBlock(32) = %d, want %d", got, want)
	}
	if got := dn.ActivationBlock(want + 4); got != 0 {
		t.Fatalf("ActivationBlock(%d) = %d, want 0 (not a multiple of %d)", want+4, got, want)
	}
}

func denseCopy(t Tensor) Tensor {
	d := NewTensor(t.N, t.C, t.H, t.W)
	t.CopyTo(d)
	return d
}

func TestBlockedLayoutRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	x := randTensor(rng, 2, 32, 3, 5)
	if d := maxAbsDiff(fromBlocked(toBlocked(x, 16)).Data, x.Data); d != 0 {
		t.Fatalf("round trip differs by %g", d)
	}
}

// TestBatchNormVectorPaths compares the vector BatchNorm loops (where the
// CPU has them) with the scalar ones, on lengths with and without tails.
func TestBatchNormVectorPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	for _, n := range []int{1, 7, 8, 15, 16, 17, 100, 1031} {
		x, g := randSlice(rng, n, 3), randSlice(rng, n, 1)
		mu, is, mdy, k := float32(0.3), float32(1.7), float32(-0.2), float32(0.4)
		close := func(a, b float32, scale float64) bool {
			return math.Abs(float64(a-b)) <= 1e-5*math.Max(1, scale)
		}
		if a, b := sumSqDev(x, mu), sumSqDevGo(x, mu); !close(a, b, float64(b)) {
			t.Fatalf("n=%d: sumSqDev %g, scalar %g", n, a, b)
		}
		a1, b1 := dotDev(g, x, mu)
		a2, b2 := dotDevGo(g, x, mu)
		if !close(a1, a2, float64(n)) || !close(b1, b2, 3*float64(n)) {
			t.Fatalf("n=%d: dotDev %g %g, scalar %g %g", n, a1, b1, a2, b2)
		}
		y1, y2 := make([]float32, n), make([]float32, n)
		bnApply(x, y1, mu, is)
		bnApplyGo(x, y2, mu, is)
		if d := maxAbsDiff(y1, y2); d > 1e-6 {
			t.Fatalf("n=%d: bnApply differs by %g", n, d)
		}
		for _, acc := range []bool{false, true} {
			o1, o2 := randSlice(rng, n, 1), make([]float32, n)
			copy(o2, o1)
			bnBack(g, x, o1, is, mdy, mu, k, acc)
			bnBackGo(g, x, o2, is, mdy, mu, k, acc)
			if d := maxAbsDiff(o1, o2); d > 1e-5 {
				t.Fatalf("n=%d acc=%v: bnBack differs by %g", n, acc, d)
			}
		}
	}
}

// TestOneDNNConcurrentInstances: instances on different goroutines (two
// arenas, say, in the web app) run at once, each on its own stream and
// memory objects, and get what one instance gets alone.
func TestOneDNNConcurrentInstances(t *testing.T) {
	oneDNNOrSkip(t)
	rng := rand.New(rand.NewPCG(6, 6))
	c, x, y, dy, dx := convCase{n: 2, in: 32, out: 32, h: 16, w: 16, k: 3}.tensors(rng)
	want := cloneTensor(y)
	solo, _ := NewCompute("onednn")
	solo.ConvForward(c, x, want, false)
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			be, _ := NewCompute("onednn")
			out := cloneTensor(y)
			d := cloneTensor(dx)
			for range 20 {
				be.ConvForward(c, x, out, false)
				be.ConvBackward(&Conv2D{In: c.In, Out: c.Out, K: c.K, Weight: c.Weight, Bias: c.Bias,
					GradW: make([]float32, len(c.GradW)), GradB: make([]float32, len(c.GradB))}, x, dy, d, false)
			}
			if diff := maxAbsDiff(out.Data, want.Data); diff != 0 {
				errs <- fmt.Errorf("concurrent instance differs by %g", diff)
				return
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestOptimVectorPaths: the vector Adam and EMA steps are bitwise the scalar
// ones (same operations, same order, no fused multiply-adds).
func TestOptimVectorPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	for _, n := range []int{1, 7, 8, 9, 64, 1003} {
		g := randSlice(rng, n, 1)
		g[0] = 0
		p1, m1, v1 := randSlice(rng, n, 1), randSlice(rng, n, 0.1), make([]float32, n)
		for i := range v1 {
			v1[i] = float32(rng.Float64() * 1e-3)
		}
		p2, m2, v2 := append([]float32(nil), p1...), append([]float32(nil), m1...), append([]float32(nil), v1...)
		for range 3 {
			AdamStep(p1, g, m1, v1, 0.9, 0.999, 2e-4/0.1, 0.0447, 1e-8)
			adamGo(p2, g, m2, v2, 0.9, 0.999, 2e-4/0.1, 0.0447, 1e-8)
		}
		for i := range p1 {
			if p1[i] != p2[i] || m1[i] != m2[i] || v1[i] != v2[i] {
				t.Fatalf("n=%d, element %d: vector Adam p %g m %g v %g, scalar %g %g %g", n, i, p1[i], m1[i], v1[i], p2[i], m2[i], v2[i])
			}
		}
		a1, live := randSlice(rng, n, 1), randSlice(rng, n, 1)
		a2 := append([]float32(nil), a1...)
		EMAStep(a1, live, 0.999)
		emaGo(a2, live, 0.999)
		for i := range a1 {
			if a1[i] != a2[i] {
				t.Fatalf("n=%d, element %d: vector EMA %g, scalar %g", n, i, a1[i], a2[i])
			}
		}
	}
}

// TestOneDNNFree: instances that are dropped are destroyed by their
// finalizer (primitives, memory objects, stream) while others go on.
func TestOneDNNFree(t *testing.T) {
	keep := oneDNNOrSkip(t)
	rng := rand.New(rand.NewPCG(8, 8))
	c, x, y, dy, dx := convCase{n: 2, in: 16, out: 16, h: 8, w: 8, k: 3}.tensors(rng)
	want := cloneTensor(y)
	keep.ConvForward(c, x, want, false)
	for range 10 {
		be, _ := NewCompute("onednn")
		be.ConvForward(c, x, y, false)
		be.ConvBackward(c, x, dy, dx, false)
		be.(*oneDNNCompute).free() // what the finalizer does
		be2, _ := NewCompute("onednn")
		be2.ConvForward(c, x, y, false)
		runtime.GC()
	}
	runtime.GC()
	got := cloneTensor(y)
	keep.ConvForward(c, x, got, false)
	if d := maxAbsDiff(got.Data, want.Data); d != 0 {
		t.Fatalf("a kept instance changed its result by %g after others were freed", d)
	}
}

// TestConvSiLUForward: each backend's inference-only convolution + SiLU (on
// oneDNN the SiLU is a post-op of the primitive) is its convolution
// followed by x·σ(x), into NCHW and into the backend's blocked layout.
func TestConvSiLUForward(t *testing.T) {
	backends := []Compute{NewKernels()}
	if dn, err := NewCompute("onednn"); err == nil {
		// Winograd (on AVX-512, channels in 16s) takes no SiLU post-op: the
		// SiLU runs after it; direct convolutions fuse it
		direct, _ := NewCompute("onednn")
		direct.(*oneDNNCompute).noWinograd = true
		backends = append(backends, dn, direct)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for _, be := range backends {
		for _, cc := range [][6]int{{2, 64, 32, 16, 16, 3}, {1, 32, 64, 8, 8, 3}, {2, 5, 7, 6, 10, 3}, {2, 4, 16, 6, 6, 1}} {
			n, in, out, h, w, k := cc[0], cc[1], cc[2], cc[3], cc[4], cc[5]
			for _, blocked := range []bool{false, true} {
				blk := 0
				if blocked { // as conv1 of a block: 3×3 only
					if blk = be.ActivationBlock(out); blk == 0 || k != 3 {
						continue
					}
				}
				c := &Conv2D{In: in, Out: out, K: k}
				np := c.NumParams()
				c.Bind(HostVec(randSlice(rng, np, 0.5)), HostVec(make([]float32, np)))
				x := randTensor(rng, n, in, h, w)
				want, y := NewTensor(n, out, h, w), NewTensor(n, out, h, w)
				want.Blocked, y.Blocked = blk, blk
				be.ConvForward(c, x, want, false)
				for i, v := range want.Data {
					want.Data[i] = float32(float64(v) / (1 + math.Exp(-float64(v))))
				}
				be.ConvSiLUForward(c, x, y)
				if d := relDiff(y.Data, want.Data); d > 1e-5 {
					t.Fatalf("%s %v blocked %d: conv+SiLU differs from conv then SiLU by %.3g", be.Name(), cc, blk, d)
				}
			}
		}
	}
}
