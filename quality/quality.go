// Package quality measures colourisations against the truth: PSNR, SSIM and
// colourfulness. Images are 8-bit RGB planes (CHW, values 0–255). Evaluate
// scores a network's colourisations of a set of images (tinct eval).
package quality

import (
	"math"

	"github.com/tinct/tinct/model"
)

// PSNR is 10·log10(255²/MSE) over all channels; +Inf for identical images.
func PSNR(a, b []uint8) float64 {
	var se float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		se += d * d
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(se/float64(len(a))))
}

// SSIM is the mean structural similarity of Wang et al. (2004) with an
// 11×11 Gaussian window (σ 1.5), K1 0.01, K2 0.03, L 255, computed per
// channel over the valid (fully covered) window positions and averaged over
// channels — as scikit-image's structural_similarity with
// gaussian_weights=True, use_sample_covariance=False, data_range=255.
func SSIM(a, b []uint8, channels, h, w int) float64 {
	const (
		radius = 5
		sigma  = 1.5
	)
	var k [2*radius + 1]float64
	var ks float64
	for i := range k {
		d := float64(i - radius)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		ks += k[i]
	}
	for i := range k {
		k[i] /= ks
	}
	c1 := math.Pow(0.01*255, 2)
	c2 := math.Pow(0.03*255, 2)
	// filter applies the separable window over valid positions
	filter := func(src []float64) []float64 {
		oh, ow := h-2*radius, w-2*radius
		tmp := make([]float64, h*ow)
		for y := range h {
			for x := range ow {
				var s float64
				for i, kv := range k {
					s += kv * src[y*w+x+i]
				}
				tmp[y*ow+x] = s
			}
		}
		out := make([]float64, oh*ow)
		for y := range oh {
			for x := range ow {
				var s float64
				for i, kv := range k {
					s += kv * tmp[(y+i)*ow+x]
				}
				out[y*ow+x] = s
			}
		}
		return out
	}
	if h <= 2*radius || w <= 2*radius {
		return math.NaN()
	}
	var total float64
	hw := h * w
	for c := range channels {
		x, y := make([]float64, hw), make([]float64, hw)
		xx, yy, xy := make([]float64, hw), make([]float64, hw), make([]float64, hw)
		for i := range hw {
			x[i], y[i] = float64(a[c*hw+i]), float64(b[c*hw+i])
			xx[i], yy[i], xy[i] = x[i]*x[i], y[i]*y[i], x[i]*y[i]
		}
		mx, my, mxx, myy, mxy := filter(x), filter(y), filter(xx), filter(yy), filter(xy)
		var s float64
		for i := range mx {
			vx := mxx[i] - mx[i]*mx[i]
			vy := myy[i] - my[i]*my[i]
			cxy := mxy[i] - mx[i]*my[i]
			s += ((2*mx[i]*my[i] + c1) * (2*cxy + c2)) / ((mx[i]*mx[i] + my[i]*my[i] + c1) * (vx + vy + c2))
		}
		total += s / float64(len(mx))
	}
	return total / float64(channels)
}

// Colorfulness is Hasler and Süsstrunk's (2003) metric M on RGB planes of
// hw pixels each: with rg = R−G and yb = (R+G)/2 − B,
// M = √(σ_rg² + σ_yb²) + 0.3·√(μ_rg² + μ_yb²) (population statistics over
// the image, 8-bit values). A gray image scores 0.
func Colorfulness(rgb []uint8, hw int) float64 {
	var srg, syb, srg2, syb2 float64
	for i := range hw {
		r, g, b := float64(rgb[i]), float64(rgb[hw+i]), float64(rgb[2*hw+i])
		rg, yb := r-g, 0.5*(r+g)-b
		srg += rg
		syb += yb
		srg2 += rg * rg
		syb2 += yb * yb
	}
	n := float64(hw)
	mrg, myb := srg/n, syb/n
	vrg, vyb := srg2/n-mrg*mrg, syb2/n-myb*myb
	return math.Sqrt(max(vrg, 0)+max(vyb, 0)) + 0.3*math.Sqrt(mrg*mrg+myb*myb)
}

// ToUint8 maps values in [−1,1] to 0–255 with model.UnitToPixel (rounding
// half up, clipping).
func ToUint8(v []float32) []uint8 {
	out := make([]uint8, len(v))
	for i, x := range v {
		out[i] = model.UnitToPixel(x)
	}
	return out
}
