package check

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// TestNetwork runs the GPU session's network check on the shim, on 8×8
// images to save time, with the selftest's network and with three levels
// of one block each (an up level fed by the previous up level, not the
// middle; no down block adds to its input's gradient) and 2 embedding
// dims: every result passes.
func TestNetwork(t *testing.T) {
	for _, cfg := range []model.Config{
		{Widths: []int{8, 16}, BlockDepth: 2, EmbedDims: 4},
		{Widths: []int{4, 8, 8}, BlockDepth: 1, EmbedDims: 2},
	} {
		for _, r := range network(cuda.NewCompute(startShim(t, false)), cfg, 21, 2, 8) {
			if !r.OK() {
				t.Errorf("%v: %v", cfg.Widths, r)
			} else {
				t.Log(r)
			}
		}
	}
}

// TestNetworkOrderIndependent runs a training step with the shim's blocks
// and threads in reverse order: the same loss and gradients bit for bit (a
// result that depended on the order would race on a GPU).
func TestNetworkOrderIndependent(t *testing.T) {
	var grads [2][]float32
	var losses [2]float32
	for i, rev := range []bool{false, true} {
		s := startShim(t, rev)
		s.Multiprocessors = 1 // grid-stride loops go round
		rng := rand.New(rand.NewPCG(14, 14))
		host, err := tinyNet(model.Config{Widths: []int{8, 16}, BlockDepth: 2, EmbedDims: 4}, rng)
		if err != nil {
			t.Fatal(err)
		}
		u, err := host.To(cuda.NewCompute(s))
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		ar, err := u.NewArena(2, 8, 8)
		if err != nil {
			t.Fatal(err)
		}
		x, noise := nn.NewTensor(2, 4, 8, 8), nn.NewTensor(2, 3, 8, 8)
		for _, v := range [][]float32{x.Data, noise.Data} {
			for j := range v {
				v[j] = float32(rng.NormFloat64())
			}
		}
		losses[i] = u.TrainStep(ar, x, []float32{0.3, 0.8}, noise, 1, nil)
		if err := u.Err(); err != nil {
			t.Fatal(err)
		}
		grads[i] = u.Grads
	}
	if losses[0] != losses[1] {
		t.Errorf("loss %g, reversed %g", losses[0], losses[1])
	}
	for i := range grads[0] {
		if math.Float32bits(grads[0][i]) != math.Float32bits(grads[1][i]) {
			t.Fatalf("Grads[%d] = %g, reversed %g", i, grads[0][i], grads[1][i])
		}
	}
}
