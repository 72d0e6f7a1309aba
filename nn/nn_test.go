package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func randTensor(rng *rand.Rand, n, c, h, w int) Tensor {
	t := NewTensor(n, c, h, w)
	for i := range t.Data {
		t.Data[i] = float32(rng.NormFloat64())
	}
	return t
}

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(scale * rng.NormFloat64())
	}
	return s
}

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// gradCheck compares an analytic gradient of the scalar loss() with
// respect to x against central finite differences at every element of x.
func gradCheck(t *testing.T, name string, x, analytic []float32, loss func() float64, h, tol float64) {
	t.Helper()
	var maxA float64
	for _, a := range analytic {
		maxA = math.Max(maxA, math.Abs(float64(a)))
	}
	scale := math.Max(maxA, 1e-3)
	var worst float64
	for i := range x {
		orig := x[i]
		x[i] = orig + float32(h)
		lp := loss()
		x[i] = orig - float32(h)
		lm := loss()
		x[i] = orig
		num := (lp - lm) / (2 * h)
		if e := math.Abs(num-float64(analytic[i])) / scale; e > worst {
			worst = e
		}
		if e := math.Abs(num-float64(analytic[i])) / scale; e > tol {
			t.Fatalf("%s: element %d: numeric %.6g, analytic %.6g (error %.3g of max |grad| %.3g)", name, i, num, analytic[i], e, maxA)
		}
	}
	t.Logf("%s: %d elements, worst relative error %.2g", name, len(x), worst)
}

func naiveConv(x Tensor, wt, b []float32, cout, k int) Tensor {
	y := NewTensor(x.N, cout, x.H, x.W)
	p := k / 2
	for n := 0; n < x.N; n++ {
		for co := 0; co < cout; co++ {
			for i := 0; i < x.H; i++ {
				for j := 0; j < x.W; j++ {
					s := float64(b[co])
					for ci := 0; ci < x.C; ci++ {
						for ky := 0; ky < k; ky++ {
							for kx := 0; kx < k; kx++ {
								si, sj := i+ky-p, j+kx-p
								if si < 0 || sj < 0 || si >= x.H || sj >= x.W {
									continue
								}
								s += float64(wt[((co*x.C+ci)*k+ky)*k+kx]) * float64(x.Plane(n, ci)[si*x.W+sj])
							}
						}
					}
					y.Plane(n, co)[i*x.W+j] = float32(s)
				}
			}
		}
	}
	return y
}

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

func TestConv(t *testing.T) {
	for _, tc := range []struct {
		k, n, cin, cout, h, w, workers, budget int
	}{
		{1, 2, 3, 4, 5, 6, 2, 1 << 19},
		{3, 2, 3, 4, 5, 6, 2, 1 << 19},
		{3, 1, 3, 2, 7, 4, 3, 1 << 19}, // batch 1: rows split across workers
		{3, 3, 2, 3, 6, 5, 2, 40},      // tiny budget: one row per tile
		{1, 1, 4, 3, 3, 8, 2, 1 << 19},
	} {
		t.Run(fmt.Sprintf("k%d_n%d_%dto%d_%dx%d_w%d_b%d", tc.k, tc.n, tc.cin, tc.cout, tc.h, tc.w, tc.workers, tc.budget), func(t *testing.T) {
			defer SetWorkers(Workers())
			defer func(b int) { colBudget = b }(colBudget)
			SetWorkers(tc.workers)
			colBudget = tc.budget
			rng := rand.New(rand.NewPCG(1, uint64(tc.k)))
			c := &Conv2D{In: tc.cin, Out: tc.cout, K: tc.k}
			params := randSlice(rng, c.NumParams(), 0.5)
			grads := make([]float32, c.NumParams())
			c.Bind(HostVec(params), HostVec(grads))
			ws := &Workspace{}
			x := randTensor(rng, tc.n, tc.cin, tc.h, tc.w)
			y := NewTensor(tc.n, tc.cout, tc.h, tc.w)
			c.Forward(ws, x, y, false)
			want := naiveConv(x, c.Weight, c.Bias, tc.cout, tc.k)
			if d := maxAbsDiff(y.Data, want.Data); d > 1e-4 {
				t.Fatalf("forward differs from direct convolution by %g", d)
			}
			// accumulate mode adds onto what is there
			c.Forward(ws, x, y, true)
			for i := range y.Data {
				if math.Abs(float64(y.Data[i]-2*want.Data[i])) > 2e-4 {
					t.Fatalf("accumulate: got %g want %g", y.Data[i], 2*want.Data[i])
				}
			}
			r := randSlice(rng, len(y.Data), 1)
			dy := TensorFrom(r, tc.n, tc.cout, tc.h, tc.w)
			dx := NewTensor(tc.n, tc.cin, tc.h, tc.w)
			Fill(dx.Data, 7) // overwritten, not added to
			c.Backward(ws, x, dy, dx, false)
			dx2 := NewTensor(tc.n, tc.cin, tc.h, tc.w)
			Fill(dx2.Data, 1)
			c.Backward(ws, x, dy, dx2, true)
			for i := range dx2.Data {
				if math.Abs(float64(dx2.Data[i]-1-dx.Data[i])) > 1e-5 {
					t.Fatalf("accumulating backward: %g, want %g", dx2.Data[i], 1+dx.Data[i])
				}
			}
			for i := range c.GradW { // two backward calls above: halve the sums
				c.GradW[i] /= 2
			}
			for i := range c.GradB {
				c.GradB[i] /= 2
			}
			loss := func() float64 {
				c.Forward(ws, x, y, false)
				return dot(y.Data, r)
			}
			gradCheck(t, "dx", x.Data, dx.Data, loss, 1e-2, 2e-3)
			gradCheck(t, "dW", c.Weight, c.GradW, loss, 1e-2, 2e-3)
			gradCheck(t, "dB", c.Bias, c.GradB, loss, 1e-2, 2e-3)
		})
	}
}

func TestBatchNormTrain(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	x := randTensor(rng, 3, 4, 3, 5)
	for i := range x.Data {
		x.Data[i] = 2*x.Data[i] + 0.5
	}
	y := NewTensor(3, 4, 3, 5)
	bn := NewBatchNorm(4)
	bn.Forward(x, y, true)
	// running statistics against a direct computation
	m := float64(x.N * x.HW())
	for c := 0; c < 4; c++ {
		var s, ss float64
		for n := 0; n < x.N; n++ {
			for _, v := range x.Plane(n, c) {
				s += float64(v)
			}
		}
		mean := s / m
		for n := 0; n < x.N; n++ {
			for _, v := range x.Plane(n, c) {
				ss += (float64(v) - mean) * (float64(v) - mean)
			}
		}
		if got, want := float64(bn.RunningMean[c]), 0.1*mean; math.Abs(got-want) > 1e-6 {
			t.Errorf("running mean %d: %g want %g", c, got, want)
		}
		if got, want := float64(bn.RunningVar[c]), 0.9+0.1*ss/(m-1); math.Abs(got-want) > 1e-5 {
			t.Errorf("running var %d: %g want %g", c, got, want)
		}
		// the output is normalised
		var ys, yss float64
		for n := 0; n < x.N; n++ {
			for _, v := range y.Plane(n, c) {
				ys += float64(v)
				yss += float64(v) * float64(v)
			}
		}
		if math.Abs(ys/m) > 1e-5 || math.Abs(yss/m-ss/m/(ss/m+1e-5)) > 1e-4 {
			t.Errorf("channel %d not normalised: mean %g, mean square %g", c, ys/m, yss/m)
		}
	}
	if bn.NumBatchesTracked != 1 {
		t.Errorf("num_batches_tracked %d", bn.NumBatchesTracked)
	}
	r := randSlice(rng, len(y.Data), 1)
	dx := NewTensor(3, 4, 3, 5)
	bn.Backward(x, TensorFrom(r, 3, 4, 3, 5), dx)
	probe := NewBatchNorm(4)
	loss := func() float64 {
		probe.Forward(x, y, true)
		return dot(y.Data, r)
	}
	gradCheck(t, "dx", x.Data, dx.Data, loss, 1e-2, 5e-3)
}

func TestBatchNormEval(t *testing.T) {
	bn := NewBatchNorm(2)
	bn.RunningMean = []float32{1, -2}
	bn.RunningVar = []float32{4, 0.25}
	x := TensorFrom([]float32{3, 5, -2, -1.5}, 1, 2, 1, 2)
	y := NewTensor(1, 2, 1, 2)
	bn.Forward(x, y, false)
	want := []float64{2 / math.Sqrt(4+1e-5), 4 / math.Sqrt(4+1e-5), 0, 0.5 / math.Sqrt(0.25+1e-5)}
	for i, w := range want {
		if math.Abs(float64(y.Data[i])-w) > 1e-6 {
			t.Errorf("y[%d] = %g, want %g", i, y.Data[i], w)
		}
	}
	if bn.NumBatchesTracked != 0 || bn.RunningMean[0] != 1 {
		t.Error("eval mode changed the running statistics")
	}
}

func TestSiLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	x := randTensor(rng, 2, 3, 4, 4)
	for i := range x.Data {
		x.Data[i] *= 4
	}
	y := NewTensor(2, 3, 4, 4)
	SiLUForward(x, y)
	for i, v := range x.Data {
		want := float64(v) / (1 + math.Exp(-float64(v)))
		if math.Abs(float64(y.Data[i])-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Fatalf("silu(%g) = %g, want %g", v, y.Data[i], want)
		}
	}
	r := randSlice(rng, len(y.Data), 1)
	dx := NewTensor(2, 3, 4, 4)
	SiLUBackward(x, TensorFrom(r, 2, 3, 4, 4), dx)
	gradCheck(t, "dx", x.Data, dx.Data, func() float64 { SiLUForward(x, y); return dot(y.Data, r) }, 1e-2, 2e-3)
}

func TestSiLUSaved(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	x := randTensor(rng, 2, 3, 4, 4)
	for i := range x.Data {
		x.Data[i] *= 5
	}
	x.Data[0], x.Data[1], x.Data[2] = 95, -95, 0
	orig := append([]float32(nil), x.Data...)
	y, yRef := NewTensor(2, 3, 4, 4), NewTensor(2, 3, 4, 4)
	SiLUForward(x, yRef)
	SiLUForwardSave(x, y)
	for i, v := range orig {
		want := 1 / (1 + math.Exp(-float64(v)))
		if math.Abs(float64(x.Data[i])-want) > 2e-7 {
			t.Fatalf("σ(%g) saved as %g, want %g", v, x.Data[i], want)
		}
		if math.Abs(float64(y.Data[i]-yRef.Data[i])) > 1e-6*math.Max(1, math.Abs(float64(yRef.Data[i]))) {
			t.Fatalf("silu(%g) = %g, want %g", v, y.Data[i], yRef.Data[i])
		}
	}
	dy := TensorFrom(randSlice(rng, len(y.Data), 1), 2, 3, 4, 4)
	dx, dxRef := NewTensor(2, 3, 4, 4), NewTensor(2, 3, 4, 4)
	SiLUBackward(TensorFrom(orig, 2, 3, 4, 4), dy, dxRef)
	SiLUBackwardSaved(x, y, dy, dx)
	if d := maxAbsDiff(dx.Data, dxRef.Data); d > 1e-6 {
		t.Fatalf("saved backward differs by %g", d)
	}
}

func TestExpNormal(t *testing.T) {
	var worst float64
	for tv := float32(-87); tv <= 88; tv += 0.0173 {
		got, want := float64(expNormal(tv)), math.Exp(float64(tv))
		e := math.Abs(got-want) / want
		worst = math.Max(worst, e)
		if e > 4e-7 {
			t.Fatalf("expNormal(%g) = %g, want %g", tv, got, want)
		}
	}
	t.Logf("expNormal worst relative error %.3g", worst)
}

func TestAvgPool(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	x := randTensor(rng, 2, 3, 4, 6)
	y := NewTensor(2, 3, 2, 3)
	AvgPool2Forward(x, y)
	if got, want := y.Plane(1, 2)[1*3+2], (x.Plane(1, 2)[2*6+4]+x.Plane(1, 2)[2*6+5]+x.Plane(1, 2)[3*6+4]+x.Plane(1, 2)[3*6+5])/4; math.Abs(float64(got-want)) > 1e-6 {
		t.Fatalf("pool %g want %g", got, want)
	}
	r := randSlice(rng, len(y.Data), 1)
	dx := NewTensor(2, 3, 4, 6)
	AvgPool2Backward(TensorFrom(r, 2, 3, 2, 3), dx)
	gradCheck(t, "dx", x.Data, dx.Data, func() float64 { AvgPool2Forward(x, y); return dot(y.Data, r) }, 1e-2, 1e-3)
}

// upsampleRef follows PyTorch's align_corners=False source index formula.
func upsampleRef(x Tensor) Tensor {
	y := NewTensor(x.N, x.C, 2*x.H, 2*x.W)
	src := func(o, l int) (int, int, float64) {
		s := math.Max(0, (float64(o)+0.5)/2-0.5)
		i0 := int(s)
		return i0, min(i0+1, l-1), s - float64(i0)
	}
	for n := 0; n < x.N; n++ {
		for c := 0; c < x.C; c++ {
			p := x.Plane(n, c)
			for oy := 0; oy < y.H; oy++ {
				y0, y1, ly := src(oy, x.H)
				for ox := 0; ox < y.W; ox++ {
					x0, x1, lx := src(ox, x.W)
					v := (1-ly)*((1-lx)*float64(p[y0*x.W+x0])+lx*float64(p[y0*x.W+x1])) +
						ly*((1-lx)*float64(p[y1*x.W+x0])+lx*float64(p[y1*x.W+x1]))
					y.Plane(n, c)[oy*y.W+ox] = float32(v)
				}
			}
		}
	}
	return y
}

func TestUpsample(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, sz := range [][2]int{{3, 4}, {1, 1}, {2, 5}} {
		x := randTensor(rng, 2, 2, sz[0], sz[1])
		y := NewTensor(2, 2, 2*sz[0], 2*sz[1])
		Upsample2Forward(x, y)
		if d := maxAbsDiff(y.Data, upsampleRef(x).Data); d > 1e-6 {
			t.Fatalf("%v: upsample differs from reference by %g", sz, d)
		}
		r := randSlice(rng, len(y.Data), 1)
		dx := NewTensor(2, 2, sz[0], sz[1])
		Upsample2Backward(TensorFrom(r, y.N, y.C, y.H, y.W), dx)
		gradCheck(t, fmt.Sprint("dx", sz), x.Data, dx.Data, func() float64 { Upsample2Forward(x, y); return dot(y.Data, r) }, 1e-2, 1e-3)
	}
}

func TestMSE(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	p, q := randTensor(rng, 2, 3, 2, 2), randTensor(rng, 2, 3, 2, 2)
	g := NewTensor(2, 3, 2, 2)
	l := MSE(p, q, g)
	var want float64
	for i := range p.Data {
		d := float64(p.Data[i] - q.Data[i])
		want += d * d
	}
	want /= float64(len(p.Data))
	if math.Abs(float64(l)-want) > 1e-6 {
		t.Fatalf("mse %g want %g", l, want)
	}
	gradCheck(t, "dpred", p.Data, g.Data, func() float64 { return float64(MSE(p, q, Tensor{})) }, 1e-2, 1e-3)
}

func TestChannelViews(t *testing.T) {
	// A conv writing into a channel range of a wider tensor leaves the other
	// channels alone and reads a view the same as a copy.
	rng := rand.New(rand.NewPCG(7, 7))
	ws := &Workspace{}
	wide := randTensor(rng, 2, 5, 4, 4)
	before := append([]float32(nil), wide.Data...)
	c := &Conv2D{In: 2, Out: 2, K: 3}
	c.Bind(HostVec(randSlice(rng, c.NumParams(), 0.5)), HostVec(make([]float32, c.NumParams())))
	src := randTensor(rng, 2, 2, 4, 4)
	c.Forward(ws, src, wide.Channels(1, 3), false)
	want := naiveConv(src, c.Weight, c.Bias, 2, 3)
	for n := 0; n < 2; n++ {
		for ch := 0; ch < 5; ch++ {
			got := wide.Plane(n, ch)
			if ch == 1 || ch == 2 {
				if d := maxAbsDiff(got, want.Plane(n, ch-1)); d > 1e-4 {
					t.Fatalf("view channel %d differs by %g", ch, d)
				}
				continue
			}
			if d := maxAbsDiff(got, before[n*80+ch*16:][:16]); d != 0 {
				t.Fatalf("channel %d outside the view changed", ch)
			}
		}
	}
	// reading from a view
	y := NewTensor(2, 2, 4, 4)
	c.Forward(ws, wide.Channels(3, 5), y, false)
	cp := NewTensor(2, 2, 4, 4)
	wide.Channels(3, 5).CopyTo(cp)
	if d := maxAbsDiff(y.Data, naiveConv(cp, c.Weight, c.Bias, 2, 3).Data); d > 1e-4 {
		t.Fatalf("conv of a view differs by %g", d)
	}
}

func TestBackendsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	var got [][]float32
	var names []string
	for _, name := range GEMMs() {
		b, err := UseGEMM(name)
		if err != nil {
			t.Logf("backend %s not available: %v", name, err)
			continue
		}
		names = append(names, b.Name())
		r := rand.New(rand.NewPCG(8, 8))
		var outs []float32
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				m, n, k := 7, 9, 11
				a, bb := randSlice(r, m*k+5, 1), randSlice(r, k*n+3, 1)
				c := randSlice(r, m*12, 1)
				lda, ldb := k, n
				if ta {
					lda = m
				}
				if tb {
					ldb = k
				}
				want := append([]float32(nil), c...)
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						var s float64
						for p := 0; p < k; p++ {
							ai, bi := i*lda+p, p*ldb+j
							if ta {
								ai = p*lda + i
							}
							if tb {
								bi = j*ldb + p
							}
							av, bv := a[ai], bb[bi]
							s += float64(av) * float64(bv)
						}
						want[i*12+j] = float32(0.5*s + 2*float64(c[i*12+j]))
					}
				}
				b.Sgemm(ta, tb, m, n, k, 0.5, a, lda, bb, ldb, 2, c, 12)
				if d := maxAbsDiff(c, want); d > 1e-4 {
					t.Fatalf("%s transA=%v transB=%v: differs from naive product by %g", b.Name(), ta, tb, d)
				}
				outs = append(outs, c...)
			}
		}
		got = append(got, outs)
	}
	_ = rng
	if len(names) == 0 {
		t.Fatal("no backend loads")
	}
	t.Logf("backends checked: %v", names)
	if _, err := UseGEMM("auto"); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownBackend(t *testing.T) {
	if _, err := UseGEMM("nope"); err == nil {
		t.Fatal("expected an error for an unknown backend")
	}
}

// TestSiLUPaths compares the vector SiLU (where the CPU has it) with the
// scalar one over a wide range and a length that leaves a tail.
func TestSiLUPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	n := 1003
	x := randSlice(rng, n, 20)
	x[5], x[6], x[7] = 1e4, -1e4, 0
	xv, yv := append([]float32(nil), x...), make([]float32, n)
	xs, ys := append([]float32(nil), x...), make([]float32, n)
	siluSave(xv, yv)
	siluSaveGo(xs, ys)
	for i := range x {
		if math.Abs(float64(xv[i]-xs[i])) > 3e-7 || math.Abs(float64(yv[i]-ys[i])) > 3e-7*math.Max(1, math.Abs(float64(ys[i]))) {
			t.Fatalf("x=%g: vector σ %g y %g, scalar σ %g y %g", x[i], xv[i], yv[i], xs[i], ys[i])
		}
	}
}

// upsample2Direct is Upsample2Forward as first written (each output blends
// its rows afresh): the blend-once kernel must give the same bits.
func upsample2Direct(x, y Tensor) {
	h, w := x.H, x.W
	for n := 0; n < x.N; n++ {
		for c := 0; c < x.C; c++ {
			src, dst := x.Plane(n, c), y.Plane(n, c)
			for oy := 0; oy < 2*h; oy++ {
				k := oy / 2
				k2 := max(0, min(h-1, k-1+2*(oy%2)))
				ra, rb := src[k*w:][:w], src[k2*w:][:w]
				out := dst[oy*2*w:][:2*w]
				for j := 0; j < w; j++ {
					v := 0.75*ra[j] + 0.25*rb[j]
					l, r := max(j-1, 0), min(j+1, w-1)
					vl := 0.75*ra[l] + 0.25*rb[l]
					vr := 0.75*ra[r] + 0.25*rb[r]
					out[2*j] = 0.75*v + 0.25*vl
					out[2*j+1] = 0.75*v + 0.25*vr
				}
			}
		}
	}
}

func TestUpsampleBitwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, sz := range [][2]int{{1, 1}, {2, 1}, {1, 2}, {3, 5}, {16, 16}, {4, 300}} {
		x := randTensor(rng, 2, 3, sz[0], sz[1])
		y, want := NewTensor(2, 3, 2*sz[0], 2*sz[1]), NewTensor(2, 3, 2*sz[0], 2*sz[1])
		Upsample2Forward(x, y)
		upsample2Direct(x, want)
		for i := range y.Data {
			if y.Data[i] != want.Data[i] {
				t.Fatalf("%v: element %d is %v, want %v", sz, i, y.Data[i], want.Data[i])
			}
		}
	}
}
