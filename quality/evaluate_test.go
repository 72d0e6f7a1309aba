package quality

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/model"
)

// pixels is a Source of synthetic images held as 8-bit planes.
type pixels struct {
	size  int
	color [][]uint8 // 3·size·size, CHW
	gray  [][]uint8 // size·size
	fail  int       // Load of this image fails (-1: none)
}

func newPixels(n, size int, seed uint64) *pixels {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := &pixels{size: size, fail: -1}
	hw := size * size
	for range n {
		c, g := make([]uint8, 3*hw), make([]uint8, hw)
		for i := range hw {
			r, gr, b := rng.IntN(256), rng.IntN(256), rng.IntN(256)
			c[i], c[hw+i], c[2*hw+i] = uint8(r), uint8(gr), uint8(b)
			g[i] = uint8((299*r + 587*gr + 114*b + 500) / 1000)
		}
		p.color, p.gray = append(p.color, c), append(p.gray, g)
	}
	return p
}

func (p *pixels) Len() int       { return len(p.color) }
func (p *pixels) ImageSize() int { return p.size }
func (p *pixels) Load(i int, color, gray []float32, flip bool) error {
	if i == p.fail {
		return fmt.Errorf("load image %d: damaged", i)
	}
	for k, v := range p.color[i] {
		color[k] = model.PixelToUnit(v)
	}
	for k, v := range p.gray[i] {
		gray[k] = model.PixelToUnit(v)
	}
	return nil
}

func tinyNet(t *testing.T) *model.UNet {
	t.Helper()
	cfg := model.DefaultConfig()
	cfg.Widths, cfg.BlockDepth = []int{4, 8}, 1
	net, err := model.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	net.Init(rand.New(rand.NewPCG(1, 2)))
	return net
}

func TestEvaluate(t *testing.T) {
	net := tinyNet(t)
	for _, tc := range []struct {
		name          string
		images, size  int
		limit, batch  int
		want          int  // images scored
		ssimUndefined bool // images under SSIM's 11×11 window
	}{
		{"8x8 in one batch", 3, 8, 0, 8, 3, true},
		{"8x8 limited, partial batch", 5, 8, 3, 2, 3, true},
		{"16x16", 2, 16, 0, 1, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newPixels(tc.images, tc.size, 3)
			var progress []int
			rep, err := Evaluate(t.Context(), net, src, Options{Steps: 2, Limit: tc.limit, Batch: tc.batch, Seed: 7,
				Progress: func(done, total int) {
					if total != tc.want {
						t.Errorf("progress total %d, want %d", total, tc.want)
					}
					progress = append(progress, done)
				}})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Images != tc.want || progress[len(progress)-1] != tc.want {
				t.Fatalf("scored %d images (progress %v), want %d", rep.Images, progress, tc.want)
			}
			// the baseline and the truth, computed directly
			hw := tc.size * tc.size
			var psnr, ssim, truth float64
			for i := range tc.want {
				g := src.gray[i]
				base := append(append(append([]uint8{}, g...), g...), g...)
				psnr += math.Min(PSNR(base, src.color[i]), PSNRCap)
				ssim += SSIM(base, src.color[i], 3, tc.size, tc.size)
				truth += Colorfulness(src.color[i], hw)
			}
			n := float64(tc.want)
			b := rep.Baseline
			if b.Name != "gray as RGB (baseline)" || math.Abs(b.PSNR-psnr/n) > 1e-9 || b.Colorfulness != 0 {
				t.Fatalf("baseline %+v, want PSNR %g and colourfulness 0", b, psnr/n)
			}
			if tc.ssimUndefined != math.IsNaN(b.SSIM) || (!tc.ssimUndefined && math.Abs(b.SSIM-ssim/n) > 1e-9) {
				t.Fatalf("baseline SSIM %g, want %g", b.SSIM, ssim/n)
			}
			if math.Abs(rep.TruthColorfulness-truth/n) > 1e-9 {
				t.Fatalf("truth colourfulness %g, want %g", rep.TruthColorfulness, truth/n)
			}
			m := rep.Model
			if m.Name != "model, 2 DDIM steps, raw RGB" || math.IsNaN(m.PSNR) || m.PSNR <= 0 || m.PSNR > PSNRCap || m.Colorfulness < 0 {
				t.Fatalf("model row %+v", m)
			}
			k := rep.Kept
			if k.Name != "model, 2 DDIM steps, luminance kept" || math.Abs(k.VsGray-(k.PSNR-b.PSNR)) > 1e-9 || math.IsNaN(k.PSNR) || k.PSNR <= 0 || k.Colorfulness < 0 {
				t.Fatalf("luminance-kept row %+v", k)
			}
			if rows := rep.Rows(); len(rows) != 3 || rows[0].Name != m.Name || rows[1].Name != k.Name || rows[2].Name != b.Name {
				t.Fatalf("rows %+v, want the model's, luminance kept, then the baseline's", rows)
			}
		})
	}
}

func TestEvaluateSeed(t *testing.T) {
	net := tinyNet(t)
	src := newPixels(2, 16, 4)
	run := func(seed uint64) Report {
		rep, err := Evaluate(t.Context(), net, src, Options{Name: "net", Steps: 2, Batch: 2, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	a, b, c := run(1), run(1), run(2)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different reports: %+v vs %+v", a, b)
	}
	if a.Model == c.Model {
		t.Fatal("another seed gave the same colourisations")
	}
	if a.Model.Name != "net, raw RGB" || a.Baseline != c.Baseline {
		t.Fatalf("reports %+v, %+v", a, c)
	}
}

// TestEvaluateBestOfN: the best-of-N row scores, per image, the sample of
// highest PSNR among N that include the first, so its mean PSNR is at
// least the luminance-kept row's; the first sample's rows do not depend on
// N beyond the noise drawn.
func TestEvaluateBestOfN(t *testing.T) {
	net := tinyNet(t)
	src := newPixels(3, 16, 6)
	rep, err := Evaluate(t.Context(), net, src, Options{Name: "net", Steps: 2, Batch: 2, Samples: 4, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Best == nil {
		t.Fatal("no best-of-N row with 4 samples")
	}
	b := *rep.Best
	if b.Name != "net, luminance kept, best of 4" || b.PSNR < rep.Kept.PSNR || b.PSNR == rep.Kept.PSNR {
		t.Fatalf("best of 4 %+v, luminance kept %+v: want a higher PSNR", b, rep.Kept)
	}
	if rep.Mean == nil || rep.Mean.Name != "net, luminance kept, mean of 4" || rep.Mean.Colorfulness >= b.Colorfulness+50 {
		t.Fatalf("mean of 4: %+v", rep.Mean)
	}
	if rows := rep.Rows(); len(rows) != 5 || rows[2].Name != b.Name || rows[3].Name != rep.Mean.Name || rows[4].Name != rep.Baseline.Name {
		t.Fatalf("rows %+v", rows)
	}
	one, err := Evaluate(t.Context(), net, src, Options{Name: "net", Steps: 2, Batch: 2, Samples: 1, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if one.Best != nil || one.Mean != nil {
		t.Fatalf("best-of-N or mean row with one sample: %+v %+v", one.Best, one.Mean)
	}
}

func TestEvaluateErrors(t *testing.T) {
	net := tinyNet(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	damaged := newPixels(3, 8, 5)
	damaged.fail = 1
	for _, tc := range []struct {
		name string
		ctx  context.Context
		src  *pixels
		opt  Options
		want string
	}{
		{"empty", context.Background(), newPixels(0, 8, 5), Options{Steps: 2}, "no images"},
		{"no steps", context.Background(), newPixels(1, 8, 5), Options{}, "0 DDIM steps"},
		{"size the network cannot take", context.Background(), newPixels(1, 7, 5), Options{Steps: 2}, "multiples of 2"},
		{"load fails", context.Background(), damaged, Options{Steps: 2, Batch: 1}, "load image 1: damaged"},
		{"cancelled", cancelled, newPixels(1, 8, 5), Options{Steps: 2}, context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Evaluate(tc.ctx, net, tc.src, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if tc.name == "cancelled" && !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v is not context.Canceled", err)
			}
		})
	}
}

// TestKeepLuminance: whatever colours a sample has, the result carries the
// input's own luminance (BT.601, within a level) and the sample's hue.
func TestKeepLuminance(t *testing.T) {
	const size = 8
	hw := size * size
	g := make([]uint8, hw)
	gen := make([]uint8, 3*hw)
	for p := range hw {
		g[p] = uint8(p * 255 / hw)
		gen[p], gen[hw+p], gen[2*hw+p] = 250, uint8(p), 10 // saturated orange, another brightness
	}
	out := planar(colorize.KeepLuminance(PlanarImage(g, 1, size).(*image.Gray), PlanarImage(gen, 3, size).(*image.RGBA)))
	for p := range hw {
		r, gg, b := float64(out[p]), float64(out[hw+p]), float64(out[2*hw+p])
		y := 0.299*r + 0.587*gg + 0.114*b
		if math.Abs(y-float64(g[p])) > 1.5 {
			t.Fatalf("pixel %d: luminance %.1f, input %d", p, y, g[p])
		}
		if g[p] > 40 && g[p] < 200 && !(r > b) {
			t.Fatalf("pixel %d: %v,%v,%v lost the sample's warm hue", p, r, gg, b)
		}
	}
}
