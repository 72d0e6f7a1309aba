package nn

import (
	"fmt"
	"os"
	"strconv"
)

// Conv2D is a stride-1 convolution with bias, kernel 1×1 or 3×3 (zero
// padding 1), weights in PyTorch's OIHW layout. P and G are its views of
// the model's flat parameter and gradient vectors (weights, then biases),
// wherever the backend keeps them; Weight, Bias, GradW and GradB are the
// same values on a host backend (nil on a device).
type Conv2D struct {
	In, Out, K   int
	P, G         Vec
	Weight, Bias []float32
	GradW, GradB []float32
}

// colBudget caps an im2col tile (floats per worker): small enough to stay in
// cache while the product consumes it, large enough for an efficient GEMM.
var colBudget = func() int {
	if v, err := strconv.Atoi(os.Getenv("TINCT_COL_BUDGET")); err == nil && v > 0 {
		return v
	}
	return 1 << 19
}()

// NumParams is the number of weights and biases.
func (c *Conv2D) NumParams() int { return c.Out*c.In*c.K*c.K + c.Out }

// Bind points the layer's parameters and gradients at params and grads,
// which must hold NumParams values each: weights first, then biases.
func (c *Conv2D) Bind(params, grads Vec) {
	c.P, c.G = params, grads
	c.Weight, c.Bias, c.GradW, c.GradB = nil, nil, nil, nil
	if params.Mem != nil {
		return
	}
	nw := c.Out * c.In * c.K * c.K
	c.Weight, c.Bias = params.Data[:nw], params.Data[nw:nw+c.Out]
	c.GradW, c.GradB = grads.Data[:nw], grads.Data[nw:nw+c.Out]
}

func (c *Conv2D) check(op string, x, y Tensor) {
	c.checkShape(op, x, y)
	mustPlain("conv", x, y)
}

func (c *Conv2D) checkShape(op string, x, y Tensor) {
	if x.C != c.In || y.C != c.Out || x.N != y.N || x.H != y.H || x.W != y.W {
		panic(fmt.Sprintf("nn: conv%dx%d %d→%d %s: input %v, output %v", c.K, c.K, c.In, c.Out, op, x.Shape(), y.Shape()))
	}
}

// Forward computes y = conv(x) + bias, or adds it to y when accumulate is set
// (the residual add of a block).
func (c *Conv2D) Forward(ws *Workspace, x, y Tensor, accumulate bool) {
	c.check("forward", x, y)
	var beta float32
	if accumulate {
		beta = 1
	}
	convolve(ws, c.K, c.Weight, c.Bias, c.In, c.Out, x, y, beta)
}

// Backward adds this call's contribution to GradW and GradB and, when dx has
// data, writes the input gradient to dx, or adds it when accumulate is set.
// x is the forward input.
func (c *Conv2D) Backward(ws *Workspace, x, dy, dx Tensor, accumulate bool) {
	c.check("backward", x, dy)
	kk := c.In * c.K * c.K
	nw := c.Out * kk
	rows, per := tiling(x.N, x.H, x.W, kk, c.K)
	accs := ws.bufs(slotAcc, nw+c.Out)
	var cols [][]float32
	if c.K == 3 {
		cols = ws.bufs(slotCol, kk*rows*x.W)
	}
	for _, a := range accs {
		clear(a)
	}
	// Each worker accumulates the transposed weight gradient, (cin·K²)×cout:
	// col·dyᵀ runs about a third faster than dy·colᵀ when cout is small.
	hw := x.HW()
	parallelFor(x.N*per, func(w, lo, hi int) { // per-worker sums: a fixed split
		acc := accs[w]
		for it := lo; it < hi; it++ {
			n, r0 := it/per, (it%per)*rows
			r1 := min(r0+rows, x.H)
			ncol := (r1 - r0) * x.W
			b, ldb := x.Image(n)[r0*x.W:], hw
			if c.K == 3 {
				b, ldb = cols[w][:kk*ncol], ncol
				im2col3(x.Image(n), c.In, x.H, x.W, r0, r1, b)
			}
			g := dy.Image(n)[r0*x.W:]
			sgemm(false, true, kk, c.Out, ncol, 1, b, ldb, g, hw, 1, acc[:nw], c.Out)
			for co := 0; co < c.Out; co++ {
				acc[nw+co] += sum32(g[co*hw:][:ncol])
			}
		}
	})
	for _, a := range accs {
		for j := 0; j < kk; j++ {
			row := a[j*c.Out:][:c.Out]
			for co, v := range row {
				c.GradW[co*kk+j] += v
			}
		}
		axpy(1, a[nw:], c.GradB)
	}
	if dx.Data == nil {
		return
	}
	c.check("input gradient", dx, dy)
	var beta float32
	if accumulate {
		beta = 1
	}
	if c.K == 1 {
		parallelFor(x.N*per, func(_, lo, hi int) {
			for it := lo; it < hi; it++ {
				n, r0 := it/per, (it%per)*rows
				r1 := min(r0+rows, x.H)
				sgemm(true, false, c.In, (r1-r0)*x.W, c.Out, 1, c.Weight, c.In, dy.Image(n)[r0*x.W:], hw, beta, dx.Image(n)[r0*x.W:], hw)
			}
		})
		return
	}
	// The input gradient of a stride-1, pad-1 3×3 convolution is the same
	// convolution of dy with the kernel flipped and in/out swapped.
	rot := ws.bufs(slotRot, nw)[0]
	for co := 0; co < c.Out; co++ {
		for ci := 0; ci < c.In; ci++ {
			for k := 0; k < 9; k++ {
				rot[(ci*c.Out+co)*9+8-k] = c.Weight[(co*c.In+ci)*9+k]
			}
		}
	}
	convolve(ws, 3, rot, nil, c.Out, c.In, dy, dx, beta)
}

// convolve computes y = beta·y + conv(x; wm, bias) for a cout×(cin·K²)
// weight matrix wm, tile by tile across workers. For 3×3 kernels the bias
// rides in the product as an extra column of the weights against a row of
// ones under the im2col matrix, which saves a pass over the output.
func convolve(ws *Workspace, k int, wm, bias []float32, cin, cout int, x, y Tensor, beta float32) {
	kk := cin * k * k
	rows, per := tiling(x.N, x.H, x.W, kk, k)
	var cols [][]float32
	ka := kk // columns of the weight matrix used
	if k == 3 {
		if bias != nil {
			ka = kk + 1
			wb := ws.bufs(slotWB, cout*ka)[0]
			for co := 0; co < cout; co++ {
				copy(wb[co*ka:], wm[co*kk:(co+1)*kk])
				wb[co*ka+kk] = bias[co]
			}
			wm, bias = wb, nil
		}
		cols = ws.bufs(slotCol, ka*rows*x.W)
	}
	hw := x.HW()
	parallelFor(x.N*per, func(w, lo, hi int) {
		for it := lo; it < hi; it++ {
			n, r0 := it/per, (it%per)*rows
			r1 := min(r0+rows, x.H)
			ncol := (r1 - r0) * x.W
			out := y.Image(n)[r0*x.W:]
			if k == 1 {
				b := beta
				if bias != nil {
					for co := 0; co < cout; co++ {
						if b == 0 {
							Fill(out[co*hw:][:ncol], bias[co])
						} else {
							addScalar(out[co*hw:][:ncol], bias[co])
						}
					}
					b = 1
				}
				sgemm(false, false, cout, ncol, cin, 1, wm, cin, x.Image(n)[r0*x.W:], hw, b, out, hw)
				continue
			}
			col := cols[w][:ka*ncol]
			im2col3(x.Image(n), cin, x.H, x.W, r0, r1, col)
			if ka > kk {
				Fill(col[kk*ncol:], 1)
			}
			sgemm(false, false, cout, ncol, ka, 1, wm, ka, col, ncol, beta, out, hw)
		}
	})
}

// tiling chooses how many image rows one work item covers so that an im2col
// tile fits colBudget and there are enough items for every worker.
func tiling(n, h, w, kk, k int) (rows, perImage int) {
	rows = h
	if k == 3 {
		rows = max(1, min(h, colBudget/(kk*w)))
	}
	perImage = (h + rows - 1) / rows
	// Few tiles split unevenly (19 tiles on 2 workers leave one idle for a
	// 19th of the layer): round the tile count up to a multiple of the
	// workers while that is a small share of the work.
	if items := n * perImage; items%workers != 0 && items < 16*workers {
		for p := perImage + 1; p <= h; p++ {
			r := (h + p - 1) / p
			if q := (h + r - 1) / r; (n*q)%workers == 0 {
				return r, q
			}
		}
	}
	return rows, perImage
}

// im2col3 lays out the 3×3, pad-1 neighbourhoods of output rows [r0,r1) of
// a cin×h×w image as a (cin·9)×((r1−r0)·w) matrix, row index ci·9+ky·3+kx.
// Each matrix row is one shifted copy of the plane's rows: the in-bounds
// rows are contiguous in the source, so it is one block copy, then the
// border column that wrapped around is zeroed.
func im2col3(x []float32, cin, h, w, r0, r1 int, col []float32) {
	ncol := (r1 - r0) * w
	for ci := 0; ci < cin; ci++ {
		plane := x[ci*h*w:][:h*w]
		for ky := 0; ky < 3; ky++ {
			// output rows whose source row r+ky−1 lies inside the plane
			lo, hi := max(r0, 1-ky), min(r1, h+1-ky)
			for kx := 0; kx < 3; kx++ {
				row := col[(ci*9+ky*3+kx)*ncol:][:ncol]
				if lo >= hi {
					clear(row)
					continue
				}
				clear(row[:(lo-r0)*w])
				clear(row[(hi-r0)*w:])
				dst := row[(lo-r0)*w : (hi-r0)*w]
				src := plane[(lo+ky-1)*w : (hi+ky-1)*w]
				switch kx {
				case 0: // dst[r][c] = src[r][c−1], column 0 is padding
					copy(dst[1:], src[:len(src)-1])
					for i := 0; i < len(dst); i += w {
						dst[i] = 0
					}
				case 1:
					copy(dst, src)
				case 2: // dst[r][c] = src[r][c+1], column w−1 is padding
					copy(dst[:len(dst)-1], src[1:])
					for i := w - 1; i < len(dst); i += w {
						dst[i] = 0
					}
				}
			}
		}
	}
}
