package model

import (
	"fmt"
	"hash"
	"math"

	"github.com/tinct/tinct/nn"
)

// Adam is torch.optim.Adam without weight decay, over one flat vector.
// M and V are the moments in host memory: a host network updates them in
// place; a device network keeps its own copy on the device (LoadAdam) and
// leaves these as they were loaded (ReadAdam copies its own back).
type Adam struct {
	LR, Beta1, Beta2, Eps float64
	Step                  int64
	M, V                  []float32
}

// NewAdam returns Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
func NewAdam(n int, lr float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, M: make([]float32, n), V: make([]float32, n)}
}

// StepCount is Step, for code that takes the optimizer by an interface
// (cluster.StateChecksum).
func (a *Adam) StepCount() int64 { return a.Step }

// next advances Step and returns that step's constants, as PyTorch 1.13's
// single-tensor Adam computes them.
func (a *Adam) next() nn.AdamConsts {
	a.Step++
	bc1 := 1 - math.Pow(a.Beta1, float64(a.Step))
	bc2 := 1 - math.Pow(a.Beta2, float64(a.Step))
	return nn.AdamConsts{Beta1: float32(a.Beta1), Beta2: float32(a.Beta2), Eps: float32(a.Eps),
		StepSize: float32(a.LR / bc1), BC2Sqrt: float32(math.Sqrt(bc2))}
}

// LoadAdam gives a device network opt's moments (a host network uses
// opt's own in Apply).
func (u *UNet) LoadAdam(opt *Adam) error {
	if len(opt.M) != u.P.N || len(opt.V) != u.P.N {
		return fmt.Errorf("model: Adam moments of %d and %d values for %d weights", len(opt.M), len(opt.V), u.P.N)
	}
	if u.be == nil {
		return nil
	}
	if u.m.N == 0 {
		u.m, u.v = u.be.NewVec(u.P.N), u.be.NewVec(u.P.N)
	}
	u.be.Upload(u.m, opt.M)
	u.be.Upload(u.v, opt.V)
	return u.Err()
}

// ReadAdam copies a device network's moments (LoadAdam's, as Apply has
// moved them since) into opt.M and opt.V, which must have the network's
// length; a device's failure is kept in u.Err(). A host network has
// nothing to do: Apply updates opt's own.
func (u *UNet) ReadAdam(opt *Adam) {
	if u.be == nil {
		return
	}
	if u.m.N != u.P.N {
		panic("model: ReadAdam on a device network before LoadAdam")
	}
	if len(opt.M) != u.P.N || len(opt.V) != u.P.N {
		panic(fmt.Sprintf("model: ReadAdam into moments of %d and %d values for %d weights", len(opt.M), len(opt.V), u.P.N))
	}
	u.be.Download(opt.M, u.m)
	u.be.Download(opt.V, u.v)
}

// HashAdam writes Adam's moments, M then V, to h as little-endian float32
// bytes, read where they live: on the device for a device network
// (LoadAdam's), opt's own for a host one. The bytes are the same on every
// backend; the step is the caller's to hash.
func (u *UNet) HashAdam(h hash.Hash, opt *Adam) {
	if u.be != nil {
		if u.m.N != u.P.N {
			panic("model: HashAdam on a device network before LoadAdam")
		}
		u.be.Hash(h, u.m)
		u.be.Hash(h, u.v)
		return
	}
	hostOps.Hash(h, nn.HostVec(opt.M))
	hostOps.Hash(h, nn.HostVec(opt.V))
}

// EMA keeps an exponential moving average of a network's weights.
type EMA struct {
	Decay float64
	// CopyBuffers copies the BatchNorm running statistics from the live
	// network each step (the original's fix); otherwise they are averaged too.
	CopyBuffers bool
}

// Update moves avg towards live: avg = decay·avg + (1−decay)·live, where
// both live (host memory, or the same device).
func (e EMA) Update(avg, live *UNet) {
	if avg.OnDevice() != live.OnDevice() {
		panic("model: EMA of a network on a device and one on the host")
	}
	be, d := live.compute(), float32(e.Decay)
	be.EMA(avg.P, live.P, d)
	if e.CopyBuffers {
		be.CopyVec(live.Bufs, avg.Bufs)
	} else {
		be.EMA(avg.Bufs, live.Bufs, d)
	}
	avg.setTracked(live.BatchesTracked())
}
