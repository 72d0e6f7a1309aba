package nn

import "fmt"

// AvgPool2Forward sets y to the 2×2 average pool of x (stride 2).
func AvgPool2Forward(x, y Tensor) {
	checkHalf("avgpool", x, y)
	planes(x, func(n, c int) {
		src, dst := x.Plane(n, c), y.Plane(n, c)
		for i := 0; i < y.H; i++ {
			r0, r1, out := src[2*i*x.W:][:x.W], src[(2*i+1)*x.W:][:x.W], dst[i*y.W:][:y.W]
			for j := range out {
				out[j] = 0.25 * (r0[2*j] + r0[2*j+1] + r1[2*j] + r1[2*j+1])
			}
		}
	})
}

// AvgPool2Backward adds the input gradient of the 2×2 average pool to dx.
func AvgPool2Backward(dy, dx Tensor) {
	checkHalf("avgpool backward", dx, dy)
	planes(dx, func(n, c int) {
		src, dst := dy.Plane(n, c), dx.Plane(n, c)
		for i := 0; i < dy.H; i++ {
			g, r0, r1 := src[i*dy.W:][:dy.W], dst[2*i*dx.W:][:dx.W], dst[(2*i+1)*dx.W:][:dx.W]
			for j, v := range g {
				v *= 0.25
				r0[2*j] += v
				r0[2*j+1] += v
				r1[2*j] += v
				r1[2*j+1] += v
			}
		}
	})
}

func checkHalf(op string, big, small Tensor) {
	mustPlain(op, big, small)
	if big.N != small.N || big.C != small.C || big.H != 2*small.H || big.W != 2*small.W {
		panic(fmt.Sprintf("nn: %s: %v is not twice %v", op, big.Shape(), small.Shape()))
	}
}

// Bilinear ×2 upsampling with half-pixel centres (PyTorch align_corners=False):
// output 2k takes ¾ of input k and ¼ of input k−1, output 2k+1 ¾ of k and ¼
// of k+1, indices clamped at the borders. The filter is separable; rows are
// done first into a scratch row pair.

// Upsample2Forward sets y to x upsampled ×2.
func Upsample2Forward(x, y Tensor) {
	checkHalf("upsample", y, x)
	h, w := x.H, x.W
	planes(x, func(n, c int) {
		src, dst := x.Plane(n, c), y.Plane(n, c)
		var stack [256]float32
		row := stack[:0]
		if w > len(stack) {
			row = make([]float32, w)
		}
		row = row[:w]
		for oy := 0; oy < 2*h; oy++ {
			k := oy / 2
			k2 := k - 1 + 2*(oy%2) // neighbour row
			k2 = max(0, min(h-1, k2))
			ra, rb := src[k*w:][:w], src[k2*w:][:w]
			// the vertical blend once per source column, then the
			// horizontal one: out[2j] from columns j−1 and j, out[2j+1]
			// from j and j+1 (clamped at the edges)
			for j := range row {
				row[j] = 0.75*ra[j] + 0.25*rb[j]
			}
			out := dst[oy*2*w:][:2*w]
			out[0] = 0.75*row[0] + 0.25*row[0]
			for j := 1; j < w; j++ {
				out[2*j] = 0.75*row[j] + 0.25*row[j-1]
				out[2*j-1] = 0.75*row[j-1] + 0.25*row[j]
			}
			out[2*w-1] = 0.75*row[w-1] + 0.25*row[w-1]
		}
	})
}

// Upsample2Backward adds the input gradient of the ×2 upsample to dx.
func Upsample2Backward(dy, dx Tensor) {
	checkHalf("upsample backward", dy, dx)
	h, w := dx.H, dx.W
	planes(dx, func(n, c int) {
		src, dst := dy.Plane(n, c), dx.Plane(n, c)
		for oy := 0; oy < 2*h; oy++ {
			k := oy / 2
			k2 := max(0, min(h-1, k-1+2*(oy%2)))
			g := src[oy*2*w:][:2*w]
			ra, rb := dst[k*w:][:w], dst[k2*w:][:w]
			for j := 0; j < w; j++ {
				l, r := max(j-1, 0), min(j+1, w-1)
				ge, go_ := g[2*j], g[2*j+1]
				// column pass transposed: j gets ¾ of both, l ¼ of even, r ¼ of odd
				cj, cl, cr := 0.75*(ge+go_), 0.25*ge, 0.25*go_
				ra[j] += 0.75 * cj
				rb[j] += 0.25 * cj
				ra[l] += 0.75 * cl
				rb[l] += 0.25 * cl
				ra[r] += 0.75 * cr
				rb[r] += 0.25 * cr
			}
		}
	})
}
