package gpunet

import (
	"fmt"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/check"
)

// Backend is a device: cuda.Exec plus memory.
type Backend interface {
	cuda.Exec
	Alloc(n int) (cuda.Mem, error) // n floats, zeroed
	Upload(dst cuda.Mem, src []float32) error
	Download(dst []float32, src cuda.Mem) error
	Sync() error
}

// Freer is a Backend that can release memory; Net.Close uses it when the
// Backend has it (the shim's memory is Go memory and needs no freeing).
type Freer interface {
	Free(m cuda.Mem) error
}

// DeviceBackend makes a GPU a Backend.
func DeviceBackend(d *cuda.Device) Backend { return deviceBackend{d} }

type deviceBackend struct{ *cuda.Device }

func (b deviceBackend) Alloc(n int) (cuda.Mem, error) {
	m, err := b.Device.Alloc(n)
	if err != nil {
		return nil, err
	}
	if err := b.Device.Zero(m, n); err != nil {
		b.Device.Free(m)
		return nil, err
	}
	return m, nil
}

func (b deviceBackend) Free(m cuda.Mem) error {
	dm, ok := m.(cuda.DevMem)
	if !ok {
		return fmt.Errorf("gpunet: %T is not device memory", m)
	}
	return b.Device.Free(dm)
}

// ShimBackend makes the CPU shim of package cuda/check a Backend: its
// memory is host memory, its kernels are the .cu sources compiled by g++
// and its products cuda.HostGemm. The tests run the network on it.
func ShimBackend(s *check.Shim) Backend { return shimBackend{s} }

type shimBackend struct{ *check.Shim }

func (b shimBackend) Alloc(n int) (cuda.Mem, error) { return b.Shim.Alloc(make([]float32, n)) }

func hostMem(m cuda.Mem, n int, op string) ([]float32, error) {
	h, ok := m.(check.HostMem)
	if !ok {
		return nil, fmt.Errorf("gpunet: shim %s: %T is not host memory", op, m)
	}
	if h.Len() < n {
		return nil, fmt.Errorf("gpunet: shim %s of %d floats with a buffer of %d", op, n, h.Len())
	}
	return h.Floats()[:n], nil
}

func (b shimBackend) Upload(dst cuda.Mem, src []float32) error {
	d, err := hostMem(dst, len(src), "upload")
	if err != nil {
		return err
	}
	copy(d, src)
	return nil
}

func (b shimBackend) Download(dst []float32, src cuda.Mem) error {
	s, err := hostMem(src, len(dst), "download")
	if err != nil {
		return err
	}
	copy(dst, s)
	return nil
}
