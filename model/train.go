package model

import (
	"math/rand/v2"

	"github.com/tinct/tinct/nn"
)

// The training step, in two halves that every path shares: TrainStep is
// what a worker computes on its share of a batch, Apply is the update every
// replica makes with the reduced result, and Commit is Apply plus the EMA,
// what the coordinator does to the committed state. worker.Worker calls
// TrainStep and Apply, trainstate.State.Commit calls Commit; the PyTorch
// cross-check and the benchmarks run these same functions.

// TrainStep runs forward in training mode on x ([N,4,H,W]) and the noise
// variances, the MSE against the true noise, and backward of that loss
// multiplied by scale (a share's weight in the whole batch's mean), into
// u.Grads (cleared first). The batch's statistics go into the BatchNorm
// buffers. ready, if not nil, is told as each tail of u.Grads is final
// (see BackwardNotify). It returns the unscaled loss; the prediction stays
// in ar.Output() until the next call.
func (u *UNet) TrainStep(ar *Arena, x nn.Tensor, noiseVar []float32, noise nn.Tensor, scale float32, ready func(from int)) float32 {
	clear(u.Grads)
	pred := u.Forward(ar, x, noiseVar, true)
	dOut := ar.dOut.Batch(x.N)
	loss := ar.be.MSE(pred, noise, dOut)
	if scale != 1 {
		for k := range dOut.N {
			img := dOut.Image(k)
			for i := range img {
				img[i] *= scale
			}
		}
	}
	u.BackwardNotify(ar, dOut, ready)
	return loss
}

// Output is the prediction of the last TrainStep or Forward on the arena.
func (ar *Arena) Output() nn.Tensor { return ar.out }

// Apply updates the network with a step's reduced gradient (Adam) and its
// BatchNorm statistics and batch count — the same on every replica.
func (u *UNet) Apply(opt *Adam, grad, bufs []float32, tracked int64) {
	opt.Update(u.Params, grad)
	u.SetBuffers(bufs, tracked)
}

// Commit is the coordinator's update of the committed state: Apply, then
// the EMA of the weights (and of the buffers, as rule says).
func Commit(net, ema *UNet, opt *Adam, rule EMA, grad, bufs []float32, tracked int64) {
	net.Apply(opt, grad, bufs, tracked)
	rule.Update(ema, net)
}

// Noisy fills eps with N(0,1) noise and builds the network input
// [signal·x0 + noise·ε | gray] and noise variances at uniformly drawn
// times i/T, i ∈ 0..T−1.
func Noisy(x0, gray, eps, input nn.Tensor, noiseVar []float32, rng *rand.Rand) {
	for n := range x0.N {
		noiseVar[n] = NoisyExample(x0.Image(n), gray.Image(n), eps.Image(n), input.Image(n), rng)
	}
}

// NoisyExample does what Noisy does for one image (colour 3·H·W, gray H·W,
// noise 3·H·W, input 4·H·W) and returns its noise variance. The time is
// drawn first, then the noise in order.
func NoisyExample(x0, gray, eps, input []float32, rng *rand.Rand) float32 {
	s64, n64 := RatesAt(rng.IntN(T))
	s, ns := float32(s64), float32(n64)
	c := x0[:len(eps)]
	for i := range eps {
		eps[i] = float32(rng.NormFloat64())
		input[i] = s*c[i] + ns*eps[i]
	}
	copy(input[len(eps):], gray)
	return float32(n64 * n64)
}
