package nn

import (
	"encoding/binary"
	"fmt"
	"hash"
	"math"

	"github.com/tinct/tinct/internal/le"
)

// The host backends' memory and the operations every backend must have
// beyond the layers: the reference kernels define them once on host
// memory, and oneDNN's backend inherits them.

func (k *kernels) Device() bool                    { return false }
func (k *kernels) NewTensor(n, c, h, w int) Tensor { return NewTensor(n, c, h, w) }
func (k *kernels) NewVec(n int) Vec                { return HostVec(make([]float32, n)) }
func (k *kernels) Err() error                      { return nil }
func (k *kernels) Close()                          { k.ws = Workspace{} }
func (k *kernels) Release(...Tensor)               {}

func (k *kernels) Upload(dst Vec, src []float32) {
	mustHost("upload", dst)
	if len(src) != dst.N {
		panic(fmt.Sprintf("nn: upload of %d values into %d", len(src), dst.N))
	}
	copyUnlessSame(dst.Data, src)
}

func (k *kernels) Download(dst []float32, src Vec) {
	mustHost("download", src)
	if len(dst) != src.N {
		panic(fmt.Sprintf("nn: download of %d values into %d", src.N, len(dst)))
	}
	copyUnlessSame(dst, src.Data)
}

// copyUnlessSame copies src to dst unless they are the same memory (a host
// network's gradient is already where the all-reduce reads it).
func copyUnlessSame(dst, src []float32) {
	if len(dst) > 0 && &dst[0] == &src[0] {
		return
	}
	copy(dst, src)
}

func (k *kernels) Copy(src, dst Tensor) { src.CopyTo(dst) }
func (k *kernels) Zero(t Tensor)        { t.Zero() }
func (k *kernels) CopyVec(src, dst Vec) {
	mustHost("copy", src, dst)
	copy(dst.Data[:dst.N], src.Data[:src.N])
}
func (k *kernels) ZeroVec(v Vec) { mustHost("zero", v); clear(v.Data[:v.N]) }

// Embed: the angle is a float32 product, as in a float32 PyTorch model (at
// 2π·1000 radians its rounding moves the sine by up to 4e-4, so it must
// match), its sine and cosine taken in float64.
func (k *kernels) Embed(noiseVar, speeds []float32, out Tensor) {
	half := len(speeds)
	if out.C != 2*half || out.N != len(noiseVar) {
		panic(fmt.Sprintf("nn: embed of %d variances × %d speeds into %v", len(noiseVar), half, out.Shape()))
	}
	for n, v := range noiseVar {
		for j, w := range speeds {
			s, c := math.Sincos(float64(v * w))
			Fill(out.Plane(n, j), float32(s))
			Fill(out.Plane(n, half+j), float32(c))
		}
	}
}

// AdamConsts are one Adam step's constants, computed on the host in
// float64 as model.Adam does and rounded once.
type AdamConsts struct {
	Beta1, Beta2, Eps, StepSize, BC2Sqrt float32
}

func (k *kernels) Adam(p, g, m, v Vec, s AdamConsts) {
	mustHost("adam", p, g, m, v)
	n := p.N
	ParallelFor(n, func(lo, hi int) {
		AdamStep(p.Data[lo:hi], g.Data[lo:hi], m.Data[lo:hi], v.Data[lo:hi], s.Beta1, s.Beta2, s.StepSize, s.BC2Sqrt, s.Eps)
	})
}

func (k *kernels) EMA(avg, live Vec, d float32) {
	mustHost("ema", avg, live)
	ParallelFor(avg.N, func(lo, hi int) { EMAStep(avg.Data[lo:hi], live.Data[lo:hi], d) })
}

// Hash writes the floats in place on little-endian hosts (no encoded copy
// of the 7.8 MB network: 4.5 ms instead of 7.0, cluster's
// BenchmarkChecksum).
func (k *kernels) Hash(h hash.Hash, v Vec) {
	mustHost("hash", v)
	HashFloats(h, v.Data[:v.N])
}

// HashFloats writes v to h as little-endian float32 bytes.
func HashFloats(h hash.Hash, v []float32) {
	if len(v) == 0 {
		return
	}
	if le.Host {
		h.Write(le.Bytes(v))
		return
	}
	const chunk = 1 << 14
	var b []byte
	for len(v) > 0 {
		n := min(len(v), chunk)
		b = b[:0]
		for _, f := range v[:n] {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
		h.Write(b)
		v = v[n:]
	}
}

func mustHost(op string, vs ...Vec) {
	for _, v := range vs {
		if v.Mem != nil {
			panic("nn: " + op + ": a device vector on a host backend")
		}
	}
}

// mseScaled is MSE with the gradient multiplied by scale after it is
// computed (the order of a share's scaling before this seam, kept bitwise).
func mseScaled(pred, target, grad Tensor, scale float32) float32 {
	loss := MSE(pred, target, grad)
	if scale != 1 && grad.Data != nil {
		for n := range grad.N {
			img := grad.Image(n)
			for i := range img {
				img[i] *= scale
			}
		}
	}
	return loss
}
