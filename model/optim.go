package model

import (
	"math"

	"github.com/tinct/tinct/nn"
)

// Adam is torch.optim.Adam without weight decay, over one flat vector.
type Adam struct {
	LR, Beta1, Beta2, Eps float64
	Step                  int64
	M, V                  []float32
}

// NewAdam returns Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
func NewAdam(n int, lr float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, M: make([]float32, n), V: make([]float32, n)}
}

// Update applies one step to params given grads, as PyTorch 1.13's
// single-tensor Adam computes it.
func (a *Adam) Update(params, grads []float32) {
	a.Step++
	bc1 := 1 - math.Pow(a.Beta1, float64(a.Step))
	bc2 := 1 - math.Pow(a.Beta2, float64(a.Step))
	stepSize := float32(a.LR / bc1)
	bc2Sqrt := float32(math.Sqrt(bc2))
	b1, b2 := float32(a.Beta1), float32(a.Beta2)
	eps := float32(a.Eps)
	nn.ParallelFor(len(params), func(lo, hi int) {
		nn.AdamStep(params[lo:hi], grads[lo:hi], a.M[lo:hi], a.V[lo:hi], b1, b2, stepSize, bc2Sqrt, eps)
	})
}

// EMA keeps an exponential moving average of a network's weights.
type EMA struct {
	Decay float64
	// CopyBuffers copies the BatchNorm running statistics from the live
	// network each step (the original's fix); otherwise they are averaged too.
	CopyBuffers bool
}

// Update moves avg towards live: avg = decay·avg + (1−decay)·live.
func (e EMA) Update(avg, live *UNet) {
	d := float32(e.Decay)
	nn.ParallelFor(len(live.Params), func(lo, hi int) {
		nn.EMAStep(avg.Params[lo:hi], live.Params[lo:hi], d)
	})
	ab, lb := avg.Blocks(), live.Blocks()
	for i := range ab {
		an, ln := ab[i].Norm, lb[i].Norm
		an.NumBatchesTracked = ln.NumBatchesTracked
		if e.CopyBuffers {
			copy(an.RunningMean, ln.RunningMean)
			copy(an.RunningVar, ln.RunningVar)
			continue
		}
		for c := range an.RunningMean {
			an.RunningMean[c] = d*an.RunningMean[c] + (1-d)*ln.RunningMean[c]
			an.RunningVar[c] = d*an.RunningVar[c] + (1-d)*ln.RunningVar[c]
		}
	}
}
