package nn

import "fmt"

// Tensor is a float32 NCHW view. Image n occupies Data[n*Stride:][:C*H*W];
// Stride may exceed C*H*W when the tensor is a channel range of a wider one,
// which is how the U-Net concatenates skips without copying.
//
// Blocked, when not 0, says the images are in a channel-blocked layout
// instead (oneDNN's nChw16c for 16: blocks of 16 channels, each H×W×16
// with the channel fastest), dense. Only a Compute backend that asked for
// such tensors (Compute.ActivationBlock) reads their values as pixels; the
// rest of the code may only treat them element-wise (SiLU), all operands
// alike, or as whole images.
//
// A device backend's tensors have Mem instead of Data: only that backend
// reads or writes their values; the views below work on both.
type Tensor struct {
	Data       []float32
	Mem        Mem
	N, C, H, W int
	Stride     int
	Blocked    int
}

// NewTensor allocates a zeroed N×C×H×W tensor.
func NewTensor(n, c, h, w int) Tensor {
	return Tensor{Data: make([]float32, n*c*h*w), N: n, C: c, H: h, W: w, Stride: c * h * w}
}

// TensorFrom wraps data (length N*C*H*W) as a contiguous tensor.
func TensorFrom(data []float32, n, c, h, w int) Tensor {
	if len(data) != n*c*h*w {
		panic(fmt.Sprintf("nn: TensorFrom: %d values for shape [%d %d %d %d]", len(data), n, c, h, w))
	}
	return Tensor{Data: data, N: n, C: c, H: h, W: w, Stride: c * h * w}
}

// HW is the number of pixels in one plane.
func (t Tensor) HW() int { return t.H * t.W }

// Image returns image n's C*H*W values.
func (t Tensor) Image(n int) []float32 {
	o := n * t.Stride
	return t.Data[o : o+t.C*t.H*t.W]
}

// Plane returns the H*W values of channel c of image n.
func (t Tensor) Plane(n, c int) []float32 {
	o := n*t.Stride + c*t.H*t.W
	return t.Data[o : o+t.H*t.W]
}

// Channels returns the view of channels [c0,c1).
func (t Tensor) Channels(c0, c1 int) Tensor {
	mustPlain("channel view", t)
	if c0 < 0 || c1 > t.C || c0 > c1 {
		panic(fmt.Sprintf("nn: channels [%d,%d) of %d", c0, c1, t.C))
	}
	v := t
	v.C = c1 - c0
	if t.Mem != nil {
		v.Mem = t.Mem.At(c0 * t.HW())
	} else {
		v.Data = t.Data[c0*t.HW():]
	}
	return v
}

// Contiguous reports whether the images are packed back to back.
func (t Tensor) Contiguous() bool { return t.Stride == t.C*t.H*t.W }

// Shape is [N, C, H, W].
func (t Tensor) Shape() []int { return []int{t.N, t.C, t.H, t.W} }

// Zero sets every element of the view to 0.
func (t Tensor) Zero() {
	parallelFor(t.N, func(_, lo, hi int) {
		for n := lo; n < hi; n++ {
			clear(t.Image(n))
		}
	})
}

// CopyTo copies t's values into dst, which must have the same shape.
func (t Tensor) CopyTo(dst Tensor) {
	mustSameShape("CopyTo", t, dst)
	for n := 0; n < t.N; n++ {
		copy(dst.Image(n), t.Image(n))
	}
}

func mustSameShape(op string, a, b Tensor) {
	if a.N != b.N || a.C != b.C || a.H != b.H || a.W != b.W || a.Blocked != b.Blocked {
		panic(fmt.Sprintf("nn: %s: shape %v (blocked %d) vs %v (blocked %d)", op, a.Shape(), a.Blocked, b.Shape(), b.Blocked))
	}
}

// mustPlain panics for a channel-blocked tensor: kernels that address
// pixels work on NCHW only.
func mustPlain(op string, ts ...Tensor) {
	for _, t := range ts {
		if t.Blocked != 0 {
			panic(fmt.Sprintf("nn: %s: a channel-blocked tensor (%d) where NCHW is needed", op, t.Blocked))
		}
	}
}

// planes runs fn over every (image, channel) plane of t, split across workers.
func planes(t Tensor, fn func(n, c int)) {
	parallelFor(t.N*t.C, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			fn(i/t.C, i%t.C)
		}
	})
}

// AddTo sets dst += src.
func AddTo(src, dst Tensor) {
	mustSameShape("add", src, dst)
	parallelFor(src.N, func(_, lo, hi int) {
		for n := lo; n < hi; n++ {
			axpy(1, src.Image(n), dst.Image(n))
		}
	})
}

// Batch returns the view of the first n images.
func (t Tensor) Batch(n int) Tensor {
	if n > t.N {
		panic(fmt.Sprintf("nn: batch of %d from %d images", n, t.N))
	}
	v := t
	v.N = n
	return v
}
