package model

import (
	"math/rand/v2"
	"testing"

	"github.com/tinct/tinct/nn"
)

// BenchmarkForward is one eval-mode call of the full network at 128², batch 1
// (the sampler's inner loop); BenchmarkTrainStep a full training step at
// 128², batch 8. `tinct bench` and bench/compare.py time the same work
// beside PyTorch.
func BenchmarkForward(b *testing.B) {
	u, _ := New(DefaultConfig())
	u.Init(rand.New(rand.NewPCG(1, 1)))
	ar, _ := u.NewArena(1, 128, 128)
	x := nn.NewTensor(1, 4, 128, 128)
	nv := []float32{0.5}
	u.Forward(ar, x, nv, false)
	b.ResetTimer()
	for range b.N {
		u.Forward(ar, x, nv, false)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/call")
}

func BenchmarkTrainStep(b *testing.B) {
	u, _ := New(DefaultConfig())
	rng := rand.New(rand.NewPCG(1, 1))
	u.Init(rng)
	tr, _ := newTrainer(u, 2e-4, EMA{Decay: 0.999, CopyBuffers: true}, 8, 128, 128)
	x0, gray := nn.NewTensor(8, 3, 128, 128), nn.NewTensor(8, 1, 128, 128)
	for i := range x0.Data {
		x0.Data[i] = 2*rng.Float32() - 1
	}
	tr.step(x0, gray, rng)
	b.ResetTimer()
	for range b.N {
		tr.step(x0, gray, rng)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
}
