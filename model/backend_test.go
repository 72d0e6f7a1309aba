package model

import (
	"testing"

	"github.com/tinct/tinct/nn"
)

// The model's suite runs on the backend $TINCT_BACKEND names: a host
// backend (go, onednn) runs the networks the tests build in host memory; a
// device backend (cuda-shim: the CUDA backend with its kernels compiled by
// g++, make test) gets a copy of each, made by onBackend, and the tests read
// results through the edges (ReadParams, Grads, hostValues).

// deviceLeg says whether the suite runs on a device backend.
func deviceLeg(t testing.TB) bool {
	t.Helper()
	be, err := nn.EnvDevice()
	if err != nil {
		t.Fatal(err)
	}
	if be == nil {
		return false
	}
	be.Close()
	return true
}

// onBackend is u where the suite runs: u itself on a host backend, else its
// copy on a new instance of the device backend, closed when the test ends.
func onBackend(t testing.TB, u *UNet) *UNet {
	t.Helper()
	be, err := nn.EnvDevice()
	if err != nil {
		t.Fatal(err)
	}
	if be == nil {
		return u
	}
	d, err := u.To(be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// copyOnBackend is a copy of u on u's backend (an EMA network).
func copyOnBackend(t testing.TB, u *UNet) *UNet {
	t.Helper()
	if !u.OnDevice() {
		v, err := New(u.Config)
		if err != nil {
			t.Fatal(err)
		}
		v.CopyFrom(u)
		return v
	}
	return onBackend(t, u)
}

// hostValues is a network output's values on the host.
func hostValues(t testing.TB, u *UNet, y nn.Tensor) []float32 {
	t.Helper()
	if !u.OnDevice() {
		return y.Data[:y.N*y.C*y.HW()]
	}
	v := make([]float32, y.N*y.C*y.HW())
	u.Compute().Download(v, y.Flat())
	if err := u.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}
