package nn

import "fmt"

// Mem is memory a device backend allocated (package cuda's: GPU memory, or
// host memory under its CPU shim), from an offset on. Host backends never
// make one: their tensors and vectors hold Data.
type Mem interface {
	At(off int) Mem // the buffer from off floats on
	Len() int       // floats from the offset to the end
}

// Vec is a flat float32 vector where a backend computes: Data on the host,
// or Mem (N floats from its offset) on a device. The network's weights,
// gradients, BatchNorm statistics and Adam's moments are Vecs, so that a
// device backend keeps them resident.
type Vec struct {
	Data []float32
	Mem  Mem
	N    int
}

// HostVec wraps host values.
func HostVec(v []float32) Vec { return Vec{Data: v, N: len(v)} }

// Slice is the view of values [lo,hi).
func (v Vec) Slice(lo, hi int) Vec {
	if lo < 0 || hi > v.N || lo > hi {
		panic(fmt.Sprintf("nn: slice [%d,%d) of a vector of %d", lo, hi, v.N))
	}
	w := Vec{N: hi - lo}
	if v.Mem != nil {
		w.Mem = v.Mem.At(lo)
	} else {
		w.Data = v.Data[lo:hi]
	}
	return w
}

// OnDevice says whether the values live in a device backend's memory.
func (v Vec) OnDevice() bool { return v.Mem != nil }

// OnDevice says whether the values live in a device backend's memory.
func (t Tensor) OnDevice() bool { return t.Mem != nil }

// Flat is t's values as one vector (t contiguous).
func (t Tensor) Flat() Vec {
	if !t.Contiguous() {
		panic(fmt.Sprintf("nn: flat view of a strided tensor %v", t.Shape()))
	}
	n := t.N * t.C * t.H * t.W
	if t.Mem != nil {
		return Vec{Mem: t.Mem, N: n}
	}
	return Vec{Data: t.Data[:n], N: n}
}

// Reshape views the first n·c·h·w values of a contiguous tensor as an
// [n,c,h,w] tensor: the arena's scratch serves blocks of every shape.
func (t Tensor) Reshape(n, c, h, w int) Tensor {
	if !t.Contiguous() || n*c*h*w > t.N*t.C*t.H*t.W {
		panic(fmt.Sprintf("nn: reshape %v (contiguous %v) to [%d %d %d %d]", t.Shape(), t.Contiguous(), n, c, h, w))
	}
	v := Tensor{Mem: t.Mem, N: n, C: c, H: h, W: w, Stride: c * h * w}
	if t.Mem == nil {
		v.Data = t.Data[:n*c*h*w]
	}
	return v
}
