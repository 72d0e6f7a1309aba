package model

import (
	"math/rand/v2"

	"github.com/tinct/tinct/nn"
)

// The training step, in two halves that every path shares: TrainStep is
// what a worker computes on its share of a batch, and Commit (Apply, then
// the EMA) is the update every replica makes with the reduced result.
// worker.Worker calls both; the coordinator's committed state is a replica's
// snapshot (trainstate.State.Load). The PyTorch cross-check and the
// benchmarks run these same functions.

// TrainStep runs forward in training mode on x ([N,4,H,W]) and the noise
// variances, the MSE against the true noise, and backward of that loss
// multiplied by scale (a share's weight in the whole batch's mean), into
// u.Grads (cleared first). The batch's statistics go into the BatchNorm
// buffers. ready, if not nil, is told as each tail of u.Grads is final
// (see BackwardNotify). It returns the unscaled loss; the prediction stays
// in ar.Output() until the next call. x and noise are host tensors (the
// batch's edge); the gradient ends in u.Grads on every backend, and a
// device's failure in u.Err().
func (u *UNet) TrainStep(ar *Arena, x nn.Tensor, noiseVar []float32, noise nn.Tensor, scale float32, ready func(from int)) float32 {
	be := ar.be
	be.ZeroVec(u.G)
	pred := u.Forward(ar, x, noiseVar, true)
	dOut := ar.dOut.Batch(x.N)
	target := noise
	if ar.target.OnDevice() {
		target = ar.target.Batch(x.N)
		be.Upload(target.Flat(), noise.Data[:target.N*target.C*target.HW()])
	}
	loss := be.MSE(pred, target, dOut, scale)
	u.BackwardNotify(ar, dOut, ready)
	return loss
}

// Output is the prediction of the last TrainStep or Forward on the arena.
func (ar *Arena) Output() nn.Tensor { return ar.out }

// Apply updates the network with a step's reduced gradient (host values:
// Adam) and its BatchNorm statistics and batch count — the same on every
// replica. A device network runs Adam on the device with the moments
// LoadAdam gave it.
func (u *UNet) Apply(opt *Adam, grad, bufs []float32, tracked int64) {
	g, m, v := nn.HostVec(grad), nn.HostVec(opt.M), nn.HostVec(opt.V)
	if u.be != nil {
		if u.m.N != u.P.N {
			panic("model: Apply on a device network before LoadAdam")
		}
		g, m, v = u.G, u.m, u.v // the gradient buffer is free between steps
		u.be.Upload(g, grad)
	}
	u.compute().Adam(u.P, g, m, v, opt.next())
	u.SetBuffers(bufs, tracked)
}

// Commit is a replica's whole update after a step: Apply, then the EMA of
// the weights (and of the buffers, as rule says).
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
