package check

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/tinct/tinct/cuda"
)

// DeviceBackend runs the cases on a GPU. Not run on a GPU yet: see
// docs/gpu.md.
type DeviceBackend struct {
	D      *cuda.Device
	allocs []cuda.DevMem
}

func (b *DeviceBackend) Launch(kernel string, grid, block cuda.Dim3, args ...any) error {
	return b.D.Launch(kernel, grid, block, args...)
}
func (b *DeviceBackend) Gemm(g cuda.Gemm) error { return b.D.Gemm(g) }
func (b *DeviceBackend) SMs() int               { return b.D.SMs() }
func (b *DeviceBackend) Sync() error            { return b.D.Sync() }

// Alloc copies data to a new device buffer.
func (b *DeviceBackend) Alloc(data []float32) (cuda.Mem, error) {
	m, err := b.D.Alloc(len(data))
	if err != nil {
		return nil, err
	}
	b.allocs = append(b.allocs, m)
	if err := b.D.Upload(m, data); err != nil {
		return nil, err
	}
	return m, nil
}

// Read copies n floats back.
func (b *DeviceBackend) Read(m cuda.Mem, n int) ([]float32, error) {
	out := make([]float32, n)
	return out, b.D.Download(out, m)
}

// Free releases every buffer Alloc made.
func (b *DeviceBackend) Free() {
	for _, m := range b.allocs {
		b.D.Free(m)
	}
	b.allocs = nil
}

// Timing is one timed product.
type Timing struct {
	What      string
	Precision cuda.Precision
	Time      time.Duration
	TFLOPS    float64
}

func (t Timing) String() string {
	return fmt.Sprintf("%-44s %-4s %8.3f ms  %6.1f TFLOP/s", t.What, t.Precision, float64(t.Time)/1e6, t.TFLOPS)
}

// TimeConv times the forward of a 3×3 convolution of c→c channels on n
// images of h×w (im2col, bias and the product), in each precision, after a
// warm-up, averaged over reps.
func TimeConv(d *cuda.Device, n, c, h, w, reps int) ([]Timing, error) {
	b := &DeviceBackend{D: d}
	defer b.Free()
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(k int) []float32 {
		x := make([]float32, k)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	conv := &cuda.Conv{In: c, Out: c, K: 3}
	var err error
	alloc := func(data []float32) cuda.Mem {
		if err != nil {
			return nil
		}
		var m cuda.Mem
		m, err = b.Alloc(data)
		return m
	}
	conv.W, conv.B = alloc(rnd(c*c*9)), alloc(rnd(c))
	x, y := alloc(rnd(n*c*h*w)), alloc(make([]float32, n*c*h*w))
	col := alloc(make([]float32, conv.ColFloats(n, h, w)))
	if err != nil {
		return nil, err
	}
	xv, yv := cuda.Contig(x, n, c, h, w), cuda.Contig(y, n, c, h, w)
	flops := 2 * float64(n) * float64(h*w) * float64(c) * float64(c*9)
	saved := d.Precision
	defer func() { d.Precision = saved }()
	var out []Timing
	for _, p := range []cuda.Precision{cuda.FP32, cuda.TF32, cuda.BF16} {
		d.Precision = p
		if err := conv.Forward(b, xv, yv, col, false); err != nil {
			return out, err
		}
		t, err := d.Time(func() error {
			for range reps {
				if err := conv.Forward(b, xv, yv, col, false); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		t /= time.Duration(reps)
		out = append(out, Timing{What: fmt.Sprintf("conv3x3 forward %d→%d, %d×%d×%d", c, c, n, h, w), Precision: p,
			Time: t, TFLOPS: flops / math.Max(t.Seconds(), 1e-12) / 1e12})
	}
	return out, nil
}
