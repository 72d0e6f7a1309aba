package nn

import "math"

// BatchNorm is BatchNorm2d without affine parameters (PyTorch defaults: eps
// 1e-5, momentum 0.1). In training it normalises with the batch statistics
// and updates the running ones; in eval it uses the running statistics.
// The statistics of the last Forward are kept for Apply and Backward.
//
// Running (the running mean, then variance) and Stats (the last Forward's
// mean, then 1/std) are views of the network's flat vectors, wherever the
// backend keeps them; RunningMean and RunningVar are the same values on a
// host backend (nil on a device).
type BatchNorm struct {
	C                       int
	Eps, Momentum           float32
	Running, Stats          Vec
	RunningMean, RunningVar []float32
	NumBatchesTracked       int64
	mean, invstd            []float32
}

// NewBatchNorm returns a layer with running mean 0 and variance 1 in host
// memory of its own.
func NewBatchNorm(c int) *BatchNorm {
	bn := &BatchNorm{C: c, Eps: 1e-5, Momentum: 0.1}
	run := make([]float32, 2*c)
	Fill(run[c:], 1)
	bn.Bind(HostVec(run), HostVec(make([]float32, 2*c)))
	return bn
}

// Bind points the layer's statistics at running and stats (2·C values
// each), which the caller initialises.
func (bn *BatchNorm) Bind(running, stats Vec) {
	bn.Running, bn.Stats = running, stats
	bn.RunningMean, bn.RunningVar, bn.mean, bn.invstd = nil, nil, nil, nil
	if running.Mem != nil {
		return
	}
	c := bn.C
	bn.RunningMean, bn.RunningVar = running.Data[:c], running.Data[c:2*c]
	bn.mean, bn.invstd = stats.Data[:c], stats.Data[c:2*c]
}

// Forward normalises x into y. With train set it uses and records the batch
// statistics and updates the running ones.
func (bn *BatchNorm) Forward(x, y Tensor, train bool) {
	mustSameShape("batchnorm", x, y)
	mustPlain("batchnorm", x)
	if !train {
		for c := range bn.C {
			bn.mean[c] = bn.RunningMean[c]
			bn.invstd[c] = float32(1 / math.Sqrt(float64(bn.RunningVar[c])+float64(bn.Eps)))
		}
		bn.Apply(x, y)
		return
	}
	m := float64(x.N * x.HW())
	parallelFor(bn.C, func(_, lo, hi int) {
		for c := lo; c < hi; c++ {
			var s float64
			for n := range x.N {
				s += float64(sum32(x.Plane(n, c)))
			}
			mean := s / m
			var ss float64
			for n := range x.N {
				ss += float64(sumSqDev(x.Plane(n, c), float32(mean)))
			}
			v := ss / m
			bn.mean[c] = float32(mean)
			bn.invstd[c] = float32(1 / math.Sqrt(v+float64(bn.Eps)))
			mom := float64(bn.Momentum)
			unbiased := v * m / math.Max(m-1, 1)
			bn.RunningMean[c] = float32((1-mom)*float64(bn.RunningMean[c]) + mom*mean)
			bn.RunningVar[c] = float32((1-mom)*float64(bn.RunningVar[c]) + mom*unbiased)
		}
	})
	bn.NumBatchesTracked++
	bn.Apply(x, y)
}

// Apply normalises x into y with the statistics of the last Forward, without
// touching the running statistics: backward uses it to recompute its input
// instead of storing it.
func (bn *BatchNorm) Apply(x, y Tensor) {
	mustPlain("batchnorm", x, y)
	planes(x, func(n, c int) {
		bnApply(x.Plane(n, c), y.Plane(n, c), bn.mean[c], bn.invstd[c])
	})
}

// Backward adds the input gradient to dx, given the forward input x and the
// output gradient dy of the last training-mode Forward.
func (bn *BatchNorm) Backward(x, dy, dx Tensor) { bn.BackwardTo(x, dy, dx, true) }

// BackwardTo is Backward that overwrites dx instead when accumulate is
// false (the first gradient written there needs no zeroed buffer).
func (bn *BatchNorm) BackwardTo(x, dy, dx Tensor, accumulate bool) {
	mustSameShape("batchnorm backward", x, dy)
	mustSameShape("batchnorm backward", x, dx)
	mustPlain("batchnorm backward", x)
	m := float64(x.N * x.HW())
	parallelFor(bn.C, func(_, lo, hi int) {
		for c := lo; c < hi; c++ {
			mu, is := bn.mean[c], bn.invstd[c]
			var sdy, sdyx float64
			for n := range x.N {
				a, b := dotDev(dy.Plane(n, c), x.Plane(n, c), mu)
				sdy += float64(a)
				sdyx += float64(b)
			}
			// dx = is·(dy − mean(dy) − x̂·mean(dy·x̂)), x̂ = (x−mu)·is
			mdy := float32(sdy / m)
			k := float32(sdyx/m) * is * is
			for n := range x.N {
				bnBack(dy.Plane(n, c), x.Plane(n, c), dx.Plane(n, c), is, mdy, mu, k, accumulate)
			}
		}
	})
}

func bnApplyGo(x, y []float32, mu, is float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] = (v - mu) * is
	}
}

func bnBackGo(g, x, out []float32, is, mdy, mu, k float32, acc bool) {
	x, out = x[:len(g)], out[:len(g)]
	if acc {
		for i, v := range g {
			out[i] += is * (v - mdy - (x[i]-mu)*k)
		}
		return
	}
	for i, v := range g {
		out[i] = is * (v - mdy - (x[i]-mu)*k)
	}
}

// sumSqDevGo returns Σ(x−mu)², with four partial sums (the additions'
// latency, not memory, bounds a single chain).
func sumSqDevGo(x []float32, mu float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		d0, d1, d2, d3 := x[i]-mu, x[i+1]-mu, x[i+2]-mu, x[i+3]-mu
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(x); i++ {
		d := x[i] - mu
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// dotDevGo returns Σg and Σg·(x−mu), with four partial sums of each.
func dotDevGo(g, x []float32, mu float32) (float32, float32) {
	x = x[:len(g)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float32
	i := 0
	for ; i+4 <= len(g); i += 4 {
		g0, g1, g2, g3 := g[i], g[i+1], g[i+2], g[i+3]
		a0 += g0
		a1 += g1
		a2 += g2
		a3 += g3
		b0 += g0 * (x[i] - mu)
		b1 += g1 * (x[i+1] - mu)
		b2 += g2 * (x[i+2] - mu)
		b3 += g3 * (x[i+3] - mu)
	}
	for ; i < len(g); i++ {
		a0 += g[i]
		b0 += g[i] * (x[i] - mu)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}
