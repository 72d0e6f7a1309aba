package cuda

import (
	"fmt"
	"math"

	"github.com/tinct/tinct/nn"
)

// Mem is a float32 buffer from an offset on: device memory on a GPU, host
// memory under the CPU shim. It is nn.Mem, so that the network's tensors
// and vectors carry it.
type Mem = nn.Mem

// View is an [N,C,H,W] range of a buffer whose images are Stride floats
// apart, like nn.Tensor.
type View struct {
	Mem        Mem
	N, C, H, W int
	Stride     int
}

// Contig is a contiguous view.
func Contig(m Mem, n, c, h, w int) View { return View{m, n, c, h, w, c * h * w} }

func (v View) HW() int    { return v.H * v.W }
func (v View) CHW() int   { return v.C * v.H * v.W }
func (v View) Elems() int { return v.N * v.CHW() }

// Channels is the view of channels [c0,c1).
func (v View) Channels(c0, c1 int) View {
	if c0 < 0 || c1 > v.C || c0 > c1 {
		panic(fmt.Sprintf("cuda: channels [%d,%d) of %d", c0, c1, v.C))
	}
	w := v
	w.C = c1 - c0
	w.Mem = v.Mem.At(c0 * v.HW())
	return w
}

func (v View) check(op string) error {
	if v.N < 0 || v.C < 0 || v.H < 0 || v.W < 0 || v.Stride < v.CHW() {
		return fmt.Errorf("cuda: %s: view [%d %d %d %d] with stride %d", op, v.N, v.C, v.H, v.W, v.Stride)
	}
	if v.N > 0 && v.Mem.Len() < (v.N-1)*v.Stride+v.CHW() {
		return fmt.Errorf("cuda: %s: view [%d %d %d %d] stride %d needs %d floats, buffer has %d", op, v.N, v.C, v.H, v.W, v.Stride, (v.N-1)*v.Stride+v.CHW(), v.Mem.Len())
	}
	return nil
}

// Gemm is the operation of cublasSgemmStridedBatched, column-major:
// C_i = α·op(A_i)·op(B_i) + β·C_i for i < Batch, A_i = A + i·StrideA, …
type Gemm struct {
	TransA, TransB bool
	M, N, K        int
	Alpha          float32
	A              Mem
	LDA, StrideA   int
	B              Mem
	LDB, StrideB   int
	Beta           float32
	C              Mem
	LDC, StrideC   int
	Batch          int
}

// Exec runs kernels and matrix products: the Device, or the CPU shim.
type Exec interface {
	// Launch runs the named kernel; args are Mem, int or float32, matching
	// the kernel's parameters.
	Launch(kernel string, grid, block Dim3, args ...any) error
	Gemm(g Gemm) error
	// SMs is the multiprocessor count (0: unknown).
	SMs() int
}

// CheckArgs verifies args against the kernel's parsed signature.
func CheckArgs(k KernelInfo, args []any) error {
	if len(args) != len(k.Params) {
		return fmt.Errorf("cuda: %s takes %d arguments, got %d", k.Name, len(k.Params), len(args))
	}
	for i, p := range k.Params {
		ok := false
		switch args[i].(type) {
		case Mem:
			ok = p.Kind == ArgF32Ptr || p.Kind == ArgF64Ptr
		case int:
			ok = p.Kind == ArgInt && args[i].(int) >= math.MinInt32 && args[i].(int) <= math.MaxInt32
		case float32:
			ok = p.Kind == ArgFloat
		}
		if !ok {
			return fmt.Errorf("cuda: %s parameter %d (%s %s): got %T %v", k.Name, i, p.Kind, p.Name, args[i], args[i])
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// elementwise launches a grid-stride kernel over the n elements of views.
func elementwise(e Exec, kernel string, n int, args ...any) error {
	grid, block, err := GridStride(n, e.SMs())
	if err != nil {
		return fmt.Errorf("%s: %w", kernel, err)
	}
	return e.Launch(kernel, grid, block, args...)
}

func sameShape(op string, vs ...View) error {
	for _, v := range vs {
		if err := v.check(op); err != nil {
			return err
		}
		if v.N != vs[0].N || v.C != vs[0].C || v.H != vs[0].H || v.W != vs[0].W {
			return fmt.Errorf("cuda: %s: shapes [%d %d %d %d] and [%d %d %d %d]", op, vs[0].N, vs[0].C, vs[0].H, vs[0].W, v.N, v.C, v.H, v.W)
		}
	}
	return nil
}

// SiLUForward sets y = x·σ(x).
func SiLUForward(e Exec, x, y View) error {
	if err := sameShape("silu", x, y); err != nil {
		return err
	}
	return elementwise(e, "silu_forward", x.Elems(), x.Mem, y.Mem, x.Elems(), x.CHW(), x.Stride, y.Stride)
}

// SiLUForwardSave sets y = x·σ(x) and x = σ(x).
func SiLUForwardSave(e Exec, x, y View) error {
	if err := sameShape("silu", x, y); err != nil {
		return err
	}
	return elementwise(e, "silu_forward_save", x.Elems(), x.Mem, y.Mem, x.Elems(), x.CHW(), x.Stride, y.Stride)
}

// SiLUBackwardSaved sets dx = dy·(σ + y·(1−σ)).
func SiLUBackwardSaved(e Exec, sig, y, dy, dx View) error {
	if err := sameShape("silu backward", sig, y, dy, dx); err != nil {
		return err
	}
	return elementwise(e, "silu_backward_saved", sig.Elems(), sig.Mem, y.Mem, dy.Mem, dx.Mem, sig.Elems(), sig.CHW(), sig.Stride, y.Stride, dy.Stride, dx.Stride)
}

// BatchNorm holds one layer's statistics on the device: Mean and InvStd of
// the last forward, and the running ones.
type BatchNorm struct {
	C                       int
	Eps, Momentum           float32
	Mean, InvStd            Mem
	RunningMean, RunningVar Mem
}

// Forward normalises x into y; with train set it computes the batch
// statistics and updates the running ones, otherwise it uses the running
// ones.
func (bn *BatchNorm) Forward(e Exec, x, y View, train bool) error {
	if err := sameShape("batchnorm", x, y); err != nil {
		return err
	}
	if x.C != bn.C {
		return fmt.Errorf("cuda: batchnorm of %d channels on %d", bn.C, x.C)
	}
	if train {
		grid, block, err := PerChannel(x.C, x.N, x.HW())
		if err != nil {
			return err
		}
		if err := e.Launch("bn_stats", grid, block, x.Mem, bn.Mean, bn.InvStd, bn.RunningMean, bn.RunningVar,
			x.N, x.C, x.HW(), x.Stride, bn.Eps, bn.Momentum); err != nil {
			return err
		}
	} else if err := elementwise(e, "bn_eval_stats", bn.C, bn.RunningMean, bn.RunningVar, bn.Mean, bn.InvStd, bn.C, bn.Eps); err != nil {
		return err
	}
	return bn.Apply(e, x, y)
}

// Apply normalises x into y with the statistics of the last Forward.
func (bn *BatchNorm) Apply(e Exec, x, y View) error {
	if err := sameShape("batchnorm apply", x, y); err != nil {
		return err
	}
	return elementwise(e, "bn_apply", x.Elems(), x.Mem, y.Mem, bn.Mean, bn.InvStd, x.N, x.C, x.HW(), x.Stride, y.Stride)
}

// Backward writes the input gradient to dx, or adds it when accumulate is
// set (nn.BatchNorm.Backward adds).
func (bn *BatchNorm) Backward(e Exec, x, dy, dx View, accumulate bool) error {
	if err := sameShape("batchnorm backward", x, dy, dx); err != nil {
		return err
	}
	grid, block, err := PerChannel(x.C, x.N, x.HW())
	if err != nil {
		return err
	}
	return e.Launch("bn_backward", grid, block, x.Mem, dy.Mem, dx.Mem, bn.Mean, bn.InvStd, x.N, x.C, x.HW(), x.Stride, dy.Stride, dx.Stride, b2i(accumulate))
}

func half(op string, big, small View) error {
	if err := big.check(op); err != nil {
		return err
	}
	if err := small.check(op); err != nil {
		return err
	}
	if big.N != small.N || big.C != small.C || big.H != 2*small.H || big.W != 2*small.W {
		return fmt.Errorf("cuda: %s: [%d %d %d %d] is not twice [%d %d %d %d]", op, big.N, big.C, big.H, big.W, small.N, small.C, small.H, small.W)
	}
	return nil
}

// AvgPool2Forward sets y to the 2×2 average pool of x.
func AvgPool2Forward(e Exec, x, y View) error {
	if err := half("avgpool", x, y); err != nil {
		return err
	}
	return elementwise(e, "avgpool2_forward", y.Elems(), x.Mem, y.Mem, y.N, y.C, y.H, y.W, x.Stride, y.Stride)
}

// AvgPool2Backward adds the input gradient of the pool to dx.
func AvgPool2Backward(e Exec, dy, dx View) error {
	if err := half("avgpool backward", dx, dy); err != nil {
		return err
	}
	return elementwise(e, "avgpool2_backward", dx.Elems(), dy.Mem, dx.Mem, dy.N, dy.C, dy.H, dy.W, dy.Stride, dx.Stride)
}

// Upsample2Forward sets y to the bilinear ×2 upsampling of x.
func Upsample2Forward(e Exec, x, y View) error {
	if err := half("upsample", y, x); err != nil {
		return err
	}
	return elementwise(e, "upsample2_forward", y.Elems(), x.Mem, y.Mem, x.N, x.C, x.H, x.W, x.Stride, y.Stride)
}

// Upsample2Backward adds the input gradient of the upsampling to dx.
func Upsample2Backward(e Exec, dy, dx View) error {
	if err := half("upsample backward", dy, dx); err != nil {
		return err
	}
	return elementwise(e, "upsample2_backward", dx.Elems(), dy.Mem, dx.Mem, dx.N, dx.C, dx.H, dx.W, dy.Stride, dx.Stride)
}

// Copy sets dst = src (a concatenation writes its parts this way).
func Copy(e Exec, src, dst View) error {
	if err := sameShape("copy", src, dst); err != nil {
		return err
	}
	return elementwise(e, "copy_view", src.Elems(), src.Mem, dst.Mem, src.Elems(), src.CHW(), src.Stride, dst.Stride)
}

// AddTo sets dst += src.
func AddTo(e Exec, src, dst View) error {
	if err := sameShape("add", src, dst); err != nil {
		return err
	}
	return elementwise(e, "add_view", src.Elems(), src.Mem, dst.Mem, src.Elems(), src.CHW(), src.Stride, dst.Stride)
}

// Fill sets every element of x to v.
func Fill(e Exec, x View, v float32) error {
	if err := x.check("fill"); err != nil {
		return err
	}
	return elementwise(e, "fill_view", x.Elems(), x.Mem, x.Elems(), x.CHW(), x.Stride, v)
}

// Embed writes the sinusoidal embedding of each image's noise variance
// into out (2·len(speeds) channels): sines, then cosines.
func Embed(e Exec, noiseVar, speeds Mem, half int, out View) error {
	if err := out.check("embed"); err != nil {
		return err
	}
	if out.C != 2*half {
		return fmt.Errorf("cuda: embed of %d speeds into %d channels", half, out.C)
	}
	return elementwise(e, "embed", out.Elems(), noiseVar, speeds, out.Mem, out.N, half, out.HW(), out.Stride)
}

// MSE writes grad = (2/count)·(pred−target)·mult and leaves in out[0] (a
// double) the sum of squares; partials must hold MaxPartials doubles
// (2·MaxPartials floats). The loss is that sum / count.
func MSE(e Exec, pred, target, grad View, mult float32, partials, out Mem) error {
	if err := sameShape("mse", pred, target, grad); err != nil {
		return err
	}
	n := pred.Elems()
	grid, block, err := ReduceGrid(n, e.SMs())
	if err != nil {
		return err
	}
	if n == 0 {
		grid = D1(1)
	}
	if partials.Len() < 2*int(grid.X) || out.Len() < 2 {
		return fmt.Errorf("cuda: mse: partials of %d floats for %d blocks", partials.Len(), grid.X)
	}
	scale := 2 / float32(n)
	if err := e.Launch("mse", grid, block, pred.Mem, target.Mem, grad.Mem, partials, n, pred.CHW(), pred.Stride, target.Stride, grad.Stride, scale, mult); err != nil {
		return err
	}
	return e.Launch("sum_f64", D1(1), D1(Threads), partials, out, int(grid.X))
}

// Adam updates n parameters p with gradients g and moments m, v, with one
// step's constants as model.Adam computes them.
func Adam(e Exec, p, g, m, v Mem, n int, s nn.AdamConsts) error {
	for _, b := range []Mem{p, g, m, v} {
		if b.Len() < n {
			return fmt.Errorf("cuda: adam over %d values with a buffer of %d", n, b.Len())
		}
	}
	return elementwise(e, "adam", n, p, g, m, v, n, s.Beta1, s.Beta2, s.Eps, s.StepSize, s.BC2Sqrt)
}

// EMA sets avg = d·avg + (1−d)·live over n values.
func EMA(e Exec, avg, live Mem, n int, d float32) error {
	if avg.Len() < n || live.Len() < n {
		return fmt.Errorf("cuda: ema over %d values with buffers of %d and %d", n, avg.Len(), live.Len())
	}
	return elementwise(e, "ema", n, avg, live, n, d)
}
