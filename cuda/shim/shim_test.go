package shim

import (
	"errors"
	"math"
	"testing"

	"github.com/tinct/tinct/nn"
)

// TestRegistered opens the backend as the model's suite does
// (TINCT_BACKEND=cuda-shim) and runs an operation on it; Close stops the
// shim's process.
func TestRegistered(t *testing.T) {
	be, err := nn.NewCompute("cuda-shim")
	if errors.Is(err, ErrNoCompiler) {
		t.Skip("no g++")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !be.Device() {
		t.Fatalf("%s: not a device backend", be.Name())
	}
	x := be.NewTensor(2, 3, 4, 4)
	v := x.Flat()
	in := make([]float32, v.N)
	for i := range in {
		in[i] = float32(i) - 40
	}
	be.Upload(v, in)
	y := be.NewTensor(2, 3, 4, 4)
	be.SiLUForwardSave(x, y)
	out := make([]float32, v.N)
	be.Download(out, y.Flat())
	if err := be.Err(); err != nil {
		t.Fatal(err)
	}
	want := nn.NewTensor(2, 3, 4, 4)
	nn.SiLUForwardSave(nn.TensorFrom(in, 2, 3, 4, 4), want)
	for i := range out { // the kernels' sigmoid is Go's to the last bits or so
		if d := math.Abs(float64(out[i] - want.Data[i])); d > 1e-6*(1+math.Abs(float64(want.Data[i]))) {
			t.Fatalf("silu [%d] = %g, want %g", i, out[i], want.Data[i])
		}
	}
	be.Close()
	if be.Err() == nil {
		t.Error("no error after Close")
	}
	again, err := Executable()
	if err != nil || again == "" {
		t.Errorf("the cached build: %q, %v", again, err)
	}
}
