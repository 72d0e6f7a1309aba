package model

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/tinct/tinct/nn"
)

// TestSamplerClip: with Clip, every step's x̂0 and so the result stay in
// [−1, 1]; without it this network's estimates leave that range (so the
// check can fail).
func TestSamplerClip(t *testing.T) {
	u := tinyNet(t, 8)
	for i := len(u.Params) - 15; i < len(u.Params); i++ { // a loud head: x̂0 far out of range
		u.Params[i] *= 40
	}
	u = onBackend(t, u)
	s, err := NewSampler(u, 2, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	gray := nn.NewTensor(2, 1, 8, 8)
	run := func(clip bool, steps int) {
		s.Clip = clip
		var lo, hi float32
		s.SetPreview(1, func(step int, x0 nn.Tensor) {
			for _, v := range x0.Data {
				lo, hi = min(lo, v), max(hi, v)
			}
		})
		out, err := s.Colorize(context.Background(), gray, 1, steps, rand.New(rand.NewPCG(5, 0)), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out.Data {
			lo, hi = min(lo, v), max(hi, v)
		}
		if clip && (lo < -1 || hi > 1) {
			t.Errorf("clipped sampling: x̂0 in [%g, %g]", lo, hi)
		}
		if !clip && lo >= -1 && hi <= 1 {
			t.Errorf("unclipped sampling stayed in [−1, 1] ([%g, %g]): the test cannot tell", lo, hi)
		}
	}
	run(false, 5)
	run(true, 5)

}
