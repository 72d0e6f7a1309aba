package quality

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"

	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// PSNRCap is the most PSNR (dB) one image adds to a mean, so that an image
// colourised exactly (+Inf) does not swamp the others.
const PSNRCap = 100

// Options are Evaluate's settings.
type Options struct {
	Name     string                // the model row's name; empty: "model, Steps DDIM steps"
	Steps    int                   // DDIM steps
	Limit    int                   // score only the first Limit images (0: all)
	Batch    int                   // images colorized at once, clamped to 1…images
	Samples  int                   // colourisations per image for the best-of-N row (0 or 1: one, no such row)
	Clip     bool                  // clamp the sampler's x̂0 to [−1, 1] at each step (model.Sampler.Clip)
	Examples int                   // keep the first Examples images' gray input, samples and truth (Report.Examples)
	Seed     uint64                // seed of the sampler's noise
	Progress func(done, total int) // called after each batch when not nil
}

// Row is one line of an evaluation: mean scores against the ground truth.
type Row struct {
	Name         string  `json:"name"`
	PSNR         float64 `json:"psnr_db"` // each image's capped at PSNRCap
	SSIM         float64 `json:"ssim"`    // NaN for images under 11×11
	Colorfulness float64 `json:"colorfulness"`
	VsGray       float64 `json:"psnr_vs_gray_db"` // PSNR minus the gray baseline's: above 0, the colour is closer to the truth than none
}

// Report is the result of Evaluate.
type Report struct {
	Images            int     // images scored
	Model             Row     // the network's colourisations, as sampled (raw RGB)
	Kept              Row     // the same with the input's own luminance: the sample's chroma only (chroma.Transfer)
	Best              *Row    // luminance kept, the best of Options.Samples colourisations per image by PSNR (nil for one)
	Mean              *Row    // luminance kept, the mean of the Options.Samples colourisations (an estimate of the posterior mean; nil for one)
	Baseline          Row     // the gray image shown as RGB
	TruthColorfulness float64 // the ground truth's mean, for scale
	Examples          []Example
}

// Example is one scored image for a picture of the results: planar 8-bit
// values, size×size.
type Example struct {
	Gray  []uint8   // the network's input
	Kept  [][]uint8 // every sample, luminance kept (RGB planes)
	Truth []uint8   // RGB planes
}

// Rows is the model's rows (raw, luminance kept, best of N when there is
// one), then the baseline's.
func (r Report) Rows() []Row {
	rows := []Row{r.Model, r.Kept}
	if r.Best != nil {
		rows = append(rows, *r.Best)
	}
	if r.Mean != nil {
		rows = append(rows, *r.Mean)
	}
	return append(rows, r.Baseline)
}

// Evaluate colorizes the first images of set (all, or opt.Limit) with net,
// opt.Samples colourisations each from opt.Seed, and scores them against
// the ground truth beside the baseline that shows the gray image as RGB:
// PSNR over the three 8-bit channels, SSIM and colourfulness. The raw and
// luminance-kept rows score each image's first sample; the best-of-N row
// its sample of highest PSNR (luminance kept). It stops early when ctx is
// done.
func Evaluate(ctx context.Context, net *model.UNet, set colorize.Source, opt Options) (Report, error) {
	n := set.Len()
	if opt.Limit > 0 {
		n = min(n, opt.Limit)
	}
	if n == 0 {
		return Report{}, errors.New("evaluate: no images to score")
	}
	if opt.Steps < 1 {
		return Report{}, fmt.Errorf("evaluate: %d DDIM steps; need at least 1", opt.Steps)
	}
	samples := max(1, opt.Samples)
	size := set.ImageSize()
	batch := max(1, min(opt.Batch, n))
	pipe, err := colorize.New(net, size, batch*samples, opt.Clip)
	if err != nil {
		return Report{}, fmt.Errorf("evaluate: %w", err)
	}
	defer pipe.Close()
	hw := size * size
	const raw, kept, best, mean, base = 0, 1, 2, 3, 4
	var sums [5]Row
	var truthColor float64
	var examples []Example
	rng := rngs.Sampler(opt.Seed) // one stream over the batches
	color := make([]float32, 3*hw)
	add := func(r *Row, img, truth []uint8) float64 {
		p := math.Min(PSNR(img, truth), PSNRCap)
		r.PSNR += p
		r.SSIM += SSIM(img, truth, 3, size, size)
		r.Colorfulness += Colorfulness(img, hw)
		return p
	}
	for start := 0; start < n; start += batch {
		k := min(batch, n-start)
		gray := nn.NewTensor(batch, 1, size, size)
		truths := make([][]uint8, k)
		for i := range k {
			if err := set.Load(start+i, color, gray.Image(i), false); err != nil {
				return Report{}, err
			}
			truths[i] = ToUint8(color)
		}
		out, err := pipe.Images(ctx, gray, samples, opt.Steps, rng, nil)
		if err != nil {
			return Report{}, err
		}
		for i := range k {
			g := ToUint8(gray.Image(i))
			gimg := PlanarImage(g, 1, size).(*image.Gray)
			var ex *Example
			if start+i < opt.Examples {
				ex = &Example{Gray: g, Truth: truths[i]}
			}
			var top []uint8
			topPSNR := math.Inf(-1)
			avg := make([]float64, 3*hw)
			for j := range samples {
				sample := out[i*samples+j]
				gen, kp := planar(sample), planar(colorize.KeepLuminance(gimg, sample))
				if ex != nil {
					ex.Kept = append(ex.Kept, kp)
				}
				if j == 0 {
					add(&sums[raw], gen, truths[i])
					add(&sums[kept], kp, truths[i])
				}
				if p := math.Min(PSNR(kp, truths[i]), PSNRCap); p > topPSNR {
					top, topPSNR = kp, p
				}
				for q, v := range kp {
					avg[q] += float64(v)
				}
			}
			mixed := make([]uint8, 3*hw)
			for q, v := range avg {
				mixed[q] = uint8(math.Round(v / float64(samples)))
			}
			add(&sums[mean], mixed, truths[i])
			if ex != nil {
				examples = append(examples, *ex)
			}
			add(&sums[best], top, truths[i])
			add(&sums[base], append(append(append([]uint8{}, g...), g...), g...), truths[i])
			truthColor += Colorfulness(truths[i], hw)
		}
		if opt.Progress != nil {
			opt.Progress(start+k, n)
		}
	}
	gray := sums[base].PSNR / float64(n)
	average := func(s Row, name string) Row {
		p := s.PSNR / float64(n)
		return Row{Name: name, PSNR: p, SSIM: s.SSIM / float64(n), Colorfulness: s.Colorfulness / float64(n), VsGray: p - gray}
	}
	name := opt.Name
	if name == "" {
		name = fmt.Sprintf("model, %d DDIM steps", opt.Steps)
	}
	rep := Report{
		Images:            n,
		Model:             average(sums[raw], name+", raw RGB"),
		Kept:              average(sums[kept], name+", luminance kept"),
		Baseline:          average(sums[base], "gray as RGB (baseline)"),
		TruthColorfulness: truthColor / float64(n),
		Examples:          examples,
	}
	if samples > 1 {
		b := average(sums[best], fmt.Sprintf("%s, luminance kept, best of %d", name, samples))
		rep.Best = &b
		m := average(sums[mean], fmt.Sprintf("%s, luminance kept, mean of %d", name, samples))
		rep.Mean = &m
	}
	return rep, nil
}

// planar is img's RGB as planes.
func planar(img *image.RGBA) []uint8 {
	hw := len(img.Pix) / 4
	out := make([]uint8, 3*hw)
	for p := range hw {
		out[p], out[hw+p], out[2*hw+p] = img.Pix[4*p], img.Pix[4*p+1], img.Pix[4*p+2]
	}
	return out
}

// PlanarImage makes an image of c planes (1: gray, 3: RGB) of size×size
// 8-bit values, as Evaluate's examples hold them; a gray one shares v.
func PlanarImage(v []uint8, c, size int) image.Image {
	hw := size * size
	if c == 1 {
		return &image.Gray{Pix: v[:hw], Stride: size, Rect: image.Rect(0, 0, size, size)}
	}
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for p := range hw {
		img.Pix[4*p], img.Pix[4*p+1], img.Pix[4*p+2], img.Pix[4*p+3] = v[p], v[hw+p], v[2*hw+p], 255
	}
	return img
}
