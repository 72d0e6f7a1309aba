package check

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/tinct/tinct/cuda"
)

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
func TimeConv(d *cuda.Device, n, c, h, w, reps int) (out []Timing, err error) {
	b := cuda.DeviceBackend(d)
	rng := rand.New(rand.NewPCG(1, 2))
	var owned []cuda.Mem
	defer func() {
		err = errors.Join(err, b.Sync())
		for _, m := range owned {
			err = errors.Join(err, b.Free(m))
		}
	}()
	buf := func(n int, random bool) cuda.Mem {
		if err != nil {
			return nil
		}
		var m cuda.Mem
		if m, err = b.Alloc(n); err != nil {
			return nil
		}
		owned = append(owned, m)
		if random {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			err = b.Upload(m, v)
		}
		return m
	}
	conv := &cuda.Conv{In: c, Out: c, K: 3}
	conv.W, conv.B = buf(c*c*9, true), buf(c, true)
	x, y := buf(n*c*h*w, true), buf(n*c*h*w, false)
	col := buf(conv.ColFloats(n, h, w), false)
	if err != nil {
		return nil, err
	}
	xv, yv := cuda.Contig(x, n, c, h, w), cuda.Contig(y, n, c, h, w)
	flops := 2 * float64(n) * float64(h*w) * float64(c) * float64(c*9)
	saved := d.Precision
	defer func() { d.Precision = saved }()
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
