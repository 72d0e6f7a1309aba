// Package colorize is tinct's one colorize pipeline: a gray photo in,
// colourisations out. `tinct colorize`, the web app, the coordinator's
// sample grids, `tinct train`'s closing example and `tinct eval` all run
// it, so that a network, a photo, a step count and a seed give the same
// colours wherever they are used:
//
//   - Fit makes a photo's luminance the network's input: the whole frame,
//     its longer side resized to the network's size with Lanczos, the rest
//     of the square mirrored (chroma.Fit);
//   - a Pipeline runs deterministic DDIM (model.Sampler) with a network;
//     a photo's starting noise comes from its seed's stream
//     (rngs.Sampler), a grid's from the stream it is given;
//   - a Result carries each sample's colour onto the photo's own luminance
//     at its own size (chroma.Transfer), or shows it at the model's size.
package colorize

import (
	"context"
	"fmt"
	"image"
	"math/rand/v2"

	"github.com/tinct/tinct/chroma"
	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/track"
)

// The limits of a colorization asked for by a person (tinct colorize's
// flags, the web app's form).
const (
	MinSteps, MaxSteps     = 10, 100
	MinSamples, MaxSamples = 1, 8
)

// Check reports a step or sample count outside the limits.
func Check(steps, samples int) error {
	if steps < MinSteps || steps > MaxSteps {
		return fmt.Errorf("steps %d: must be %d to %d", steps, MinSteps, MaxSteps)
	}
	if samples < MinSamples || samples > MaxSamples {
		return fmt.Errorf("samples %d: must be %d to %d", samples, MinSamples, MaxSamples)
	}
	return nil
}

// Input is a photo made ready for a network of size².
type Input struct {
	Lum   *image.Gray     // the photo's luminance at its own size, upright
	Gray  *image.Gray     // the network's input, size²
	Frame image.Rectangle // where the photo lies in Gray; the rest mirrors it
}

// Fit makes lum the input of a network of size².
func Fit(lum *image.Gray, size int) *Input {
	g, frame := chroma.Fit(lum, size)
	return &Input{Lum: lum, Gray: g, Frame: frame}
}

// Pipeline colorizes with one network, a fixed number of images at a time
// (gray images × samples each). It is used by one colorization at a time.
type Pipeline struct {
	s    *model.Sampler
	size int
}

// New prepares to colorize batch images of size² at a time with net (on
// its own device, or the host's kernels). clip clamps each step's estimate
// of the clean image to the data range (model.Sampler.Clip). Close frees
// its memory.
func New(net *model.UNet, size, batch int, clip bool) (*Pipeline, error) {
	s, err := model.NewSampler(net, batch, size, size)
	if err != nil {
		return nil, err
	}
	s.Clip = clip
	return &Pipeline{s: s, size: size}, nil
}

// Close frees the pipeline's arena.
func (p *Pipeline) Close() { p.s.Close() }

// SetPreview asks for fn to be called every `every` steps (not the last)
// with the first sample's current estimate of the clean image, at the
// model's size. fn nil turns it off.
func (p *Pipeline) SetPreview(every int, fn func(step int, x0 *image.RGBA)) {
	if fn == nil {
		p.s.SetPreview(0, nil)
		return
	}
	p.s.SetPreview(every, func(step int, x0 nn.Tensor) { fn(step, p.image(x0.Image(0))) })
}

// Photo colorizes one photo: samples colourisations in steps DDIM steps,
// their starting noise from seed's stream (rngs.Sampler), so that the same
// network, photo, steps and seed give the same colours. progress, if not
// nil, is called after each step. The pipeline's batch must be samples.
func (p *Pipeline) Photo(ctx context.Context, in *Input, samples, steps int, seed uint64, progress func(step, steps int)) (*Result, error) {
	gray := nn.NewTensor(1, 1, p.size, p.size)
	for i, v := range in.Gray.Pix[:p.size*p.size] {
		gray.Data[i] = model.PixelToUnit(v)
	}
	out, err := p.Images(ctx, gray, samples, steps, rngs.Sampler(seed), progress)
	if err != nil {
		return nil, err
	}
	return &Result{Input: in, Samples: out}, nil
}

// Images colorizes gray images (n×1×size×size, values in [−1, 1]; n ×
// samples the pipeline's batch): image i's samples are out[i·samples …
// i·samples+samples−1], at the model's size, their starting noise from rng.
func (p *Pipeline) Images(ctx context.Context, gray nn.Tensor, samples, steps int, rng *rand.Rand, progress func(step, steps int)) ([]*image.RGBA, error) {
	out, err := p.s.Colorize(ctx, gray, samples, steps, rng, progress)
	if err != nil {
		return nil, err
	}
	imgs := make([]*image.RGBA, out.N)
	for k := range imgs {
		imgs[k] = p.image(out.Image(k))
	}
	return imgs, nil
}

func (p *Pipeline) image(chw []float32) *image.RGBA {
	return track.ToImage(chw, 3, p.size, p.size).(*image.RGBA)
}

// Result is a photo's colourisations.
type Result struct {
	*Input
	Samples []*image.RGBA // at the model's size: the whole square
}

// Small is sample k at the model's size, the photo's frame only.
func (r *Result) Small(k int) image.Image { return r.Samples[k].SubImage(r.Frame) }

// Full is sample k at the photo's own size: the sample's colour on the
// photo's luminance.
func (r *Result) Full(k int) *image.RGBA { return chroma.Transfer(r.Lum, r.Samples[k], r.Frame) }

// FullRows makes Full row by row, handing each row (RGB) to emit, so that a
// large photo's result is never held whole.
func (r *Result) FullRows(k int, emit func(y int, rgb []uint8) error) error {
	return chroma.TransferRows(r.Lum, r.Samples[k], r.Frame, emit)
}

// KeepLuminance is sample's colour on gray's luminance, both of the model's
// size: how the sample grids and tinct eval show a colourisation "with the
// luminance kept", as Full does at a photo's size.
func KeepLuminance(gray *image.Gray, sample image.Image) *image.RGBA {
	return chroma.Transfer(gray, sample, sample.Bounds())
}

// Source is a split of images with their truth; *dataset.Set is one.
type Source interface {
	Len() int
	ImageSize() int
	// Load reads image i into color (3·S·S values, CHW) and gray (S·S
	// values), scaled to [−1, 1], mirrored when flip is set.
	Load(i int, color, gray []float32, flip bool) error
}

// Grid colorizes the first k images of set with net, one sample each in
// steps steps from rng, and renders them as rows gray / colourisation /
// truth: a run's sample grids and tinct train's closing example. The
// colourisation keeps the gray's luminance unless raw.
func Grid(ctx context.Context, net *model.UNet, set Source, k, steps int, clip, raw bool, rng *rand.Rand) (*image.RGBA, error) {
	s := set.ImageSize()
	color, gray := nn.NewTensor(k, 3, s, s), nn.NewTensor(k, 1, s, s)
	for i := range k {
		if err := set.Load(i, color.Image(i), gray.Image(i), false); err != nil {
			return nil, err
		}
	}
	p, err := New(net, s, k, clip)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	out, err := p.Images(ctx, gray, 1, steps, rng, nil)
	if err != nil {
		return nil, err
	}
	rows := make([][]image.Image, 3)
	for i, col := range out {
		g := track.ToImage(gray.Image(i), 1, s, s).(*image.Gray)
		if !raw {
			col = KeepLuminance(g, col)
		}
		rows[0], rows[1], rows[2] = append(rows[0], g), append(rows[1], col), append(rows[2], track.ToImage(color.Image(i), 3, s, s))
	}
	return track.Grid(rows, 2), nil
}
