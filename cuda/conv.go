package cuda

import (
	"fmt"
	"math"
)

// Conv is nn.Conv2D on the device: a stride-1 convolution with bias,
// kernel 1×1 or 3×3 (zero padding 1), weights Out×In×K×K (PyTorch's OIHW)
// in W, biases in B, their gradients in GW and GB. The products are
// cuBLAS's (column-major, so each row-major product below is written as
// its transpose); the rest is this package's kernels.
type Conv struct {
	In, Out, K   int
	W, B, GW, GB Mem
}

// ColFloats is the im2col buffer Forward and Backward need for n images of
// h×w (0 for 1×1 kernels).
func (c *Conv) ColFloats(n, h, w int) int {
	if c.K == 1 {
		return 0
	}
	return n * max(c.In, c.Out) * 9 * h * w
}

// RotFloats is the flipped-kernel buffer Backward needs.
func (c *Conv) RotFloats() int {
	if c.K == 1 {
		return 0
	}
	return c.In * c.Out * 9
}

func (c *Conv) check(op string, x, y View) error {
	if err := x.check(op); err != nil {
		return err
	}
	if err := y.check(op); err != nil {
		return err
	}
	if c.K != 1 && c.K != 3 {
		return fmt.Errorf("cuda: conv%dx%d: only 1×1 and 3×3", c.K, c.K)
	}
	if x.C != c.In || y.C != c.Out || x.N != y.N || x.H != y.H || x.W != y.W {
		return fmt.Errorf("cuda: conv%dx%d %d→%d %s: input [%d %d %d %d], output [%d %d %d %d]", c.K, c.K, c.In, c.Out, op, x.N, x.C, x.H, x.W, y.N, y.C, y.H, y.W)
	}
	return nil
}

// Forward sets y = conv(x) + bias, or adds it to y when accumulate is set.
// col holds ColFloats floats.
func (c *Conv) Forward(e Exec, x, y View, col Mem, accumulate bool) error {
	if err := c.check("forward", x, y); err != nil {
		return err
	}
	n, hw, kk := x.N, x.HW(), c.In*c.K*c.K
	if err := elementwise(e, "bias_forward", y.Elems(), y.Mem, c.B, n, c.Out, hw, y.Stride, b2i(accumulate)); err != nil {
		return err
	}
	a, strideA := x.Mem, x.Stride
	if c.K == 3 {
		if col == nil || col.Len() < n*kk*hw {
			return fmt.Errorf("cuda: conv forward needs %d floats of im2col buffer", n*kk*hw)
		}
		if err := elementwise(e, "im2col3", n*kk*hw, x.Mem, col, n, c.In, x.H, x.W, x.Stride); err != nil {
			return err
		}
		a, strideA = col, kk*hw
	}
	// y_i (Out×hw) += W (Out×kk) · col_i (kk×hw); column-major: yᵀ = colᵀ·Wᵀ
	return e.Gemm(Gemm{M: hw, N: c.Out, K: kk, Alpha: 1,
		A: a, LDA: hw, StrideA: strideA, B: c.W, LDB: kk, StrideB: 0,
		Beta: 1, C: y.Mem, LDC: hw, StrideC: y.Stride, Batch: n})
}

// Backward adds the weight and bias gradients to GW and GB and, when dx.Mem
// is not nil, writes the input gradient to dx (adds it when accumulate is
// set). x is the forward input; col holds ColFloats floats and rot
// RotFloats.
func (c *Conv) Backward(e Exec, x, dy, dx View, col, rot Mem, accumulate bool) error {
	if err := c.check("backward", x, dy); err != nil {
		return err
	}
	n, hw, kk := x.N, x.HW(), c.In*c.K*c.K
	grid, block, err := PerChannel(c.Out, n, hw)
	if err != nil {
		return err
	}
	if err := e.Launch("bias_grad", grid, block, dy.Mem, c.GB, n, c.Out, hw, dy.Stride); err != nil {
		return err
	}
	if c.K == 3 {
		if col == nil || col.Len() < c.ColFloats(n, x.H, x.W) || rot == nil || rot.Len() < c.RotFloats() {
			return fmt.Errorf("cuda: conv backward needs %d floats of im2col and %d of rotated weights", c.ColFloats(n, x.H, x.W), c.RotFloats())
		}
		if err := elementwise(e, "im2col3", n*kk*hw, x.Mem, col, n, c.In, x.H, x.W, x.Stride); err != nil {
			return err
		}
	}
	// GW (Out×kk) += Σ_i dy_i (Out×hw) · col_iᵀ; column-major: GWᵀ += col_i·dy_iᵀ
	for i := range n {
		a := x.Mem.At(i * x.Stride)
		if c.K == 3 {
			a = col.At(i * kk * hw)
		}
		if err := e.Gemm(Gemm{TransA: true, M: kk, N: c.Out, K: hw, Alpha: 1,
			A: a, LDA: hw, B: dy.Mem.At(i * dy.Stride), LDB: hw,
			Beta: 1, C: c.GW, LDC: kk, Batch: 1}); err != nil {
			return err
		}
	}
	if dx.Mem == nil {
		return nil
	}
	if err := c.check("input gradient", dx, dy); err != nil {
		return err
	}
	beta := float32(b2i(accumulate))
	if c.K == 1 {
		// dx_i (In×hw) = Wᵀ (In×Out) · dy_i; column-major: dxᵀ = dyᵀ·W
		return e.Gemm(Gemm{TransB: true, M: hw, N: c.In, K: c.Out, Alpha: 1,
			A: dy.Mem, LDA: hw, StrideA: dy.Stride, B: c.W, LDB: c.In,
			Beta: beta, C: dx.Mem, LDC: hw, StrideC: dx.Stride, Batch: n})
	}
	// the input gradient is the 3×3 convolution of dy with the kernel
	// flipped and in/out swapped (as nn.Conv2D.Backward computes it)
	if err := elementwise(e, "rot_weights", c.Out*c.In*9, c.W, rot, c.In, c.Out); err != nil {
		return err
	}
	ko := c.Out * 9
	if err := elementwise(e, "im2col3", n*ko*hw, dy.Mem, col, n, c.Out, x.H, x.W, dy.Stride); err != nil {
		return err
	}
	return e.Gemm(Gemm{M: hw, N: c.In, K: ko, Alpha: 1,
		A: col, LDA: hw, StrideA: ko * hw, B: rot, LDB: ko,
		Beta: beta, C: dx.Mem, LDC: hw, StrideC: dx.Stride, Batch: n})
}

// Validate checks the sizes and that every operand's buffer holds what
// the product reads or writes.
func (g Gemm) Validate() error {
	if g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 0 || g.StrideA < 0 || g.StrideB < 0 || g.StrideC < 0 {
		return fmt.Errorf("cuda: gemm %dx%dx%d×%d: negative size or stride", g.M, g.N, g.K, g.Batch)
	}
	for _, v := range []int{g.M, g.N, g.K, g.LDA, g.LDB, g.LDC, g.Batch} { // cuBLAS takes these as int
		if v > math.MaxInt32 {
			return fmt.Errorf("cuda: gemm size %d beyond int32", v)
		}
	}
	if g.Batch == 0 || g.M == 0 || g.N == 0 {
		return nil
	}
	operand := func(name string, m Mem, trans bool, rows, cols, ld, stride int) error {
		if trans {
			rows, cols = cols, rows
		}
		if ld < max(rows, 1) {
			return fmt.Errorf("cuda: gemm %s: leading dimension %d below %d rows", name, ld, rows)
		}
		if rows == 0 || cols == 0 {
			return nil
		}
		need := (g.Batch-1)*stride + (cols-1)*ld + rows
		if m == nil || m.Len() < need {
			l := 0
			if m != nil {
				l = m.Len()
			}
			return fmt.Errorf("cuda: gemm %s needs %d floats, buffer has %d", name, need, l)
		}
		return nil
	}
	if err := operand("A", g.A, g.TransA, g.M, g.K, g.LDA, g.StrideA); err != nil {
		return err
	}
	if err := operand("B", g.B, g.TransB, g.K, g.N, g.LDB, g.StrideB); err != nil {
		return err
	}
	return operand("C", g.C, false, g.M, g.N, g.LDC, g.StrideC)
}

// HostGemm computes g on host slices, column-major, as
// cublasSgemmStridedBatched defines it: the reference the CPU shim uses in
// place of cuBLAS, and the check of the device's products.
func HostGemm(g Gemm, a, b, c []float32) {
	for i := range g.Batch {
		ao, bo, co := i*g.StrideA, i*g.StrideB, i*g.StrideC
		for col := range g.N {
			for row := range g.M {
				var s float32
				for k := range g.K {
					var av, bv float32
					if g.TransA {
						av = a[ao+k+row*g.LDA]
					} else {
						av = a[ao+row+k*g.LDA]
					}
					if g.TransB {
						bv = b[bo+col+k*g.LDB]
					} else {
						bv = b[bo+k+col*g.LDB]
					}
					s += av * bv
				}
				p := co + row + col*g.LDC
				if g.Beta == 0 {
					c[p] = g.Alpha * s
				} else {
					c[p] = g.Alpha*s + g.Beta*c[p]
				}
			}
		}
	}
}
