package model

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/tinct/tinct/nn"
)

// Sampler colorizes gray images with deterministic DDIM (η = 0) using a
// network in eval mode. Its arena is sized for one batch shape and reused.
type Sampler struct {
	Net *UNet
	// Clip clamps each step's estimate of the clean images, x̂0, to the
	// data range [−1, 1] and re-derives the noise from it, so that the next
	// step starts from an image that could be a photo (off by default: the
	// sampler as trained; docs/quality.md measures both).
	Clip  bool
	arena *Arena
	eps   nn.Tensor // the network's output on the host
	x     nn.Tensor // current noisy colour images
	input nn.Tensor
	nv    []float32

	previewEvery int
	preview      func(step int, x0 nn.Tensor)
	x0           nn.Tensor
}

// SetPreview asks Colorize to call fn every `every` steps (and not at the
// last, whose result Colorize returns) with the current estimate of the
// clean images, x̂0 = (x − noise·ε̂)/signal, [batch,3,H,W], valid during the
// call. It costs one more store per pixel on those steps. fn nil turns it off.
func (s *Sampler) SetPreview(every int, fn func(step int, x0 nn.Tensor)) {
	s.previewEvery, s.preview = max(every, 1), fn
	if fn != nil && s.x0.Data == nil {
		s.x0 = nn.NewTensor(s.x.N, 3, s.x.H, s.x.W)
	}
}

// NewSampler prepares to colorize batch images of h×w at a time (a batch is
// gray images × samples per image) on the network's backend: its own
// device, or the host's kernels. Close frees its arena.
func NewSampler(net *UNet, batch, h, w int) (*Sampler, error) {
	ar, err := net.NewArena(batch, h, w)
	if err != nil {
		return nil, err
	}
	return &Sampler{Net: net, arena: ar, x: nn.NewTensor(batch, 3, h, w), input: nn.NewTensor(batch, 4, h, w),
		eps: nn.NewTensor(batch, 3, h, w), nv: make([]float32, batch)}, nil
}

// Close frees the sampler's arena (its host backend's scratch).
func (s *Sampler) Close() { s.arena.Close() }

// Batch is the number of images the sampler runs at once.
func (s *Sampler) Batch() int { return s.x.N }

// Colorize returns samples colourisations of each gray image ([B,1,H,W],
// values in [−1,1]) as [B·samples,3,H,W] in [−1,1] before clipping: image b's
// samples are rows b·samples … b·samples+samples−1. Starting noise comes
// from rng, so a seed fixes the result. progress, if not nil, is called
// after each of the steps network calls. It stops early when ctx is done.
func (s *Sampler) Colorize(ctx context.Context, gray nn.Tensor, samples, steps int, rng *rand.Rand, progress func(step, steps int)) (nn.Tensor, error) {
	if gray.C != 1 || gray.H != s.x.H || gray.W != s.x.W || gray.N*samples != s.x.N {
		return nn.Tensor{}, fmt.Errorf("colorize %v × %d samples with a sampler for %d images of %d×%d", gray.Shape(), samples, s.x.N, s.x.H, s.x.W)
	}
	if steps < 1 {
		return nn.Tensor{}, fmt.Errorf("steps %d: need at least 1", steps)
	}
	hw := gray.HW()
	for i := range s.x.Data {
		s.x.Data[i] = float32(rng.NormFloat64())
	}
	for n := range s.x.N {
		copy(s.input.Image(n)[3*hw:], gray.Image(n/samples))
	}
	times := SamplerTimes(steps)
	for k, t := range times {
		if err := ctx.Err(); err != nil {
			return nn.Tensor{}, err
		}
		sig64, noi64 := RatesAt(t)
		sig, noi := float32(sig64), float32(noi64)
		for n := range s.x.N {
			copy(s.input.Image(n)[:3*hw], s.x.Image(n))
			s.nv[n] = float32(noi64 * noi64)
		}
		eps := s.Net.Forward(s.arena, s.input, s.nv, false)
		if s.Net.OnDevice() {
			s.arena.be.Download(s.eps.Data, eps.Flat())
			if err := s.Net.Err(); err != nil {
				return nn.Tensor{}, err
			}
			eps = s.eps
		}
		last := k == len(times)-1
		show := s.preview != nil && !last && (k+1)%s.previewEvery == 0
		var nsig, nnoi float32
		if !last {
			a, b := RatesAt(times[k+1])
			nsig, nnoi = float32(a), float32(b)
		}
		for i, v := range s.x.Data {
			e := eps.Data[i]
			x0 := (v - noi*e) / sig
			if s.Clip && (x0 < -1 || x0 > 1) {
				x0 = min(max(x0, -1), 1)
				e = (v - sig*x0) / noi
			}
			if last {
				s.x.Data[i] = x0
			} else {
				s.x.Data[i] = nsig*x0 + nnoi*e
			}
			if show {
				s.x0.Data[i] = x0
			}
		}
		if show {
			s.preview(k+1, s.x0)
		}
		if progress != nil {
			progress(k+1, steps)
		}
	}
	return s.x, nil
}
