// Package lanczos computes Lanczos-3 resampling weights the way Pillow's
// precompute_coeffs does, for the dataset's resize (what training sees)
// and the full-resolution chroma transfer (what users get back).
package lanczos

import "math"

// Filter holds, for each output sample o, the first input sample Lo[o] it
// reads and its weights W[Off[o]:Off[o+1]].
type Filter struct {
	Lo  []int
	Off []int
	W   []float32
}

// Weights computes resampling weights from in samples to out samples:
// output sample o is centred at (o + 0.5)·in/out in input coordinates,
// the kernel is widened by the scale factor when shrinking (antialiasing),
// the window is clipped to the input and the weights of each output are
// normalized to sum to one, which keeps flat regions flat up to the
// borders.
func Weights(in, out int) Filter {
	scale := float64(in) / float64(out)
	fscale := max(scale, 1)
	support := 3 * fscale
	f := Filter{Lo: make([]int, out), Off: make([]int, out+1)}
	f.W = make([]float32, 0, out*(2*int(math.Ceil(support))+1))
	k := make([]float64, 0, 2*int(math.Ceil(support))+2)
	for o := range out {
		center := (float64(o) + 0.5) * scale
		lo := max(int(math.Floor(center-support+0.5)), 0)
		hi := min(int(math.Floor(center+support+0.5)), in)
		k = k[:0]
		sum := 0.0
		for x := lo; x < hi; x++ {
			v := Kernel((float64(x) + 0.5 - center) / fscale)
			k = append(k, v)
			sum += v
		}
		if math.Abs(sum) < 1e-9 {
			// Cannot happen for Lanczos-3 (the nearest sample always has a
			// large positive weight), but never divide by zero: fall back
			// to the nearest sample.
			lo = min(max(int(center), 0), in-1)
			k = append(k[:0], 1)
			sum = 1
		}
		f.Lo[o] = lo
		for _, v := range k {
			f.W = append(f.W, float32(v/sum))
		}
		f.Off[o+1] = len(f.W)
	}
	return f
}

// Kernel is the Lanczos kernel with a = 3: sinc(x)·sinc(x/3) on (−3, 3).
func Kernel(x float64) float64 {
	if x <= -3 || x >= 3 {
		return 0
	}
	return sinc(x) * sinc(x/3)
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}
