package model

import (
	"math/rand/v2"

	"github.com/tinct/tinct/nn"
)

// Trainer runs noise-prediction training steps: forward, MSE against the
// true noise, backward, Adam, EMA. Its buffers are allocated once.
type Trainer struct {
	Net, EMANet *UNet
	Opt         *Adam
	EMA         EMA
	arena       *Arena
	input       nn.Tensor
	noise       nn.Tensor
	noiseVar    []float32
}

// NewTrainer trains net (whose EMA copy starts equal to it) on batches of
// n images of h×w.
func NewTrainer(net *UNet, lr float64, ema EMA, n, h, w int) (*Trainer, error) {
	ar, err := net.NewArena(n, h, w)
	if err != nil {
		return nil, err
	}
	avg, err := New(net.Config)
	if err != nil {
		return nil, err
	}
	avg.CopyFrom(net)
	return &Trainer{Net: net, EMANet: avg, Opt: NewAdam(net.NumParams(), lr), EMA: ema, arena: ar,
		input: nn.NewTensor(n, 4, h, w), noise: nn.NewTensor(n, 3, h, w), noiseVar: make([]float32, n)}, nil
}

// Step trains on network inputs x ([N,4,H,W]), noise variances and the true
// noise, and returns the loss before the update.
func (t *Trainer) Step(x nn.Tensor, noiseVar []float32, noise nn.Tensor) float32 {
	loss := t.Gradients(x, noiseVar, noise)
	t.Apply()
	return loss
}

// Gradients runs forward and backward, leaving ∂loss/∂weights in Net.Grads
// (and the batch's statistics in the BatchNorm buffers), and returns the
// loss. It also returns the prediction, valid until the next call.
func (t *Trainer) Gradients(x nn.Tensor, noiseVar []float32, noise nn.Tensor) float32 {
	clear(t.Net.Grads)
	pred := t.Net.Forward(t.arena, x, noiseVar, true)
	loss := nn.MSE(pred, noise, t.arena.dOut)
	t.Net.Backward(t.arena, t.arena.dOut)
	return loss
}

// Prediction is the network output of the last Gradients call.
func (t *Trainer) Prediction() nn.Tensor { return t.arena.out }

// Apply updates the weights with Adam from Net.Grads, then the EMA.
func (t *Trainer) Apply() {
	t.Opt.Update(t.Net.Params, t.Net.Grads)
	t.EMA.Update(t.EMANet, t.Net)
}

// StepImages draws a diffusion time and noise for each image of a batch of
// colour images x0 ([N,3,H,W] in [−1,1]) and their grays ([N,1,H,W]), forms
// x_t = signal·x0 + noise·ε, and trains on it.
func (t *Trainer) StepImages(x0, gray nn.Tensor, rng *rand.Rand) float32 {
	Noisy(x0, gray, t.noise, t.input, t.noiseVar, rng)
	return t.Step(t.input, t.noiseVar, t.noise)
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
