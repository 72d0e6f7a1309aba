package opcheck

import (
	"hash"
	"testing"

	_ "github.com/tinct/tinct/cuda/shim" // cuda-shim: the CUDA backend on the CPU
	"github.com/tinct/tinct/nn"
)

// backends opens each backend the suite runs on: tinct's kernels, oneDNN's
// primitives and the CUDA backend through its g++ shim. One that cannot
// open here (no libdnnl, no g++) is skipped, saying why: make deps installs
// both, so make test runs all three.
func backends(t *testing.T, fn func(t *testing.T, be nn.Compute)) {
	for _, name := range []string{"go", "onednn", "cuda-shim"} {
		t.Run(name, func(t *testing.T) {
			be, err := nn.NewCompute(name)
			if err != nil {
				if be != nil {
					be.Close()
				}
				t.Skipf("%s: %v", name, err)
			}
			defer be.Close()
			fn(t, be)
		})
	}
}

// TestOps: every operation of every backend agrees with the reference
// kernels.
func TestOps(t *testing.T) {
	backends(t, func(t *testing.T, be nn.Compute) {
		for _, r := range Run(be, 1, FP32) {
			if !r.OK() {
				t.Error(r)
			} else if testing.Verbose() {
				t.Log(r)
			}
		}
	})
}

// broken is a backend whose upsampling forgets its last row: the kind of
// mistake the check exists for.
type broken struct{ nn.Compute }

func (b broken) Upsample2Forward(x, y nn.Tensor) {
	b.Compute.Upsample2Forward(x, y)
	b.Compute.Zero(y.Channels(y.C-1, y.C))
}

// TestOpsCatchABrokenOp: the same check fails on every backend when one of
// its operations is wrong.
func TestOpsCatchABrokenOp(t *testing.T) {
	backends(t, func(t *testing.T, be nn.Compute) {
		var failed []string
		for _, r := range Run(broken{be}, 1, FP32) {
			if !r.OK() {
				failed = append(failed, r.Case)
			}
		}
		// (the cases after it that read its output fail too)
		if len(failed) == 0 || failed[0] != "upsample forward" {
			t.Errorf("a broken upsampling on %s: failed %q, want upsample forward first", be.Name(), failed)
		}
	})
}

// badHash hashes one value too few.
type badHash struct{ nn.Compute }

func (b badHash) Hash(h hash.Hash, v nn.Vec) { b.Compute.Hash(h, v.Slice(1, v.N)) }

// TestMismatchIsNoError: a difference that is not a number (the hash)
// fails its case as a mismatch; Err stays the backend's failure to run
// (nil: the operations ran), as `tinct cuda selftest` reports them apart.
func TestMismatchIsNoError(t *testing.T) {
	for _, r := range Run(badHash{nn.NewKernels()}, 1, FP32) {
		if r.Case == "hash of a vector slice" {
			if r.OK() || r.Err != nil || r.Mismatch == "" {
				t.Errorf("a wrong hash: %+v", r)
			}
		} else if !r.OK() {
			t.Error(r)
		}
	}
}
