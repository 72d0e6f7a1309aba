package worker

import (
	"context"
	"errors"
	"math"
	"os"
	"testing"

	"github.com/tinct/tinct/cuda/check"
	"github.com/tinct/tinct/cuda/gpunet"
	"github.com/tinct/tinct/model"
)

// TestWorkerOnGPUNetShim runs a worker's steps on the real device network
// (cuda/gpunet) with the kernels on the CPU shim (g++, as in cuda/check),
// beside a worker on the host's kernels: the whole path a GPU worker takes
// — UseDevice, Load's upload, TrainStep with the gradient downloaded tail by
// tail before the all-reduce is told, Apply with the device's Adam — checked
// without a GPU. Losses, gradients and weights agree within the device
// network's tolerances (cuda/gpunet: the sums run in another order).
func TestWorkerOnGPUNetShim(t *testing.T) {
	dir := t.TempDir()
	exe, err := check.BuildShim(dir)
	if errors.Is(err, check.ErrNoCompiler) {
		if os.Getenv("CI") != "" {
			t.Fatal("no g++ in CI: the device network's path is not checked")
		}
		t.Skip("no g++")
	}
	if err != nil {
		t.Fatal(err)
	}
	shim, err := check.StartShim(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer shim.Close()

	plain, _ := newWorker(t)
	w, _ := newWorker(t)
	var opened *gpunet.Net
	err = w.UseDevice(func(host *model.UNet) (Device, error) {
		n, err := gpunet.New(gpunet.ShimBackend(shim), host)
		opened = n
		return n, err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	launches := shim.Runs
	close := func(what string, got, want []float32, tol float64) {
		t.Helper()
		var scale, worst float64
		for _, v := range want {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		for i := range want {
			worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > tol*math.Max(scale, 1e-12) {
			t.Errorf("%s: differs by %.3g (largest value %.3g)", what, worst, scale)
		}
	}
	for step := range int64(3) {
		task := Task{Step: step, Indices: []int{0, 3, 5}, Seed: 11, Flip: true}
		var readies []int
		want, err := plain.ComputeScaled(context.Background(), task, 0.5, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.ComputeScaled(context.Background(), task, 0.5, func(from int) { readies = append(readies, from) })
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got.Loss-want.Loss) > 1e-5*math.Abs(want.Loss) {
			t.Errorf("step %d: loss %g on the device, %g on the host", step, got.Loss, want.Loss)
		}
		close("gradient", got.Grads, want.Grads, 1e-4)
		close("BatchNorm buffers", got.Buffers, want.Buffers, 1e-5)
		if len(readies) == 0 || readies[len(readies)-1] != 0 {
			t.Errorf("step %d: ready calls %v, want a last one at 0", step, readies)
		}
		// both replicas apply the host's reduced update, as a ring would
		// give them the same vector
		if err := errors.Join(plain.Apply(want.Grads, want.Buffers, step+1), w.Apply(want.Grads, want.Buffers, step+1)); err != nil {
			t.Fatal(err)
		}
		close("weights after Apply", w.Params(), plain.Params(), 1e-5)
	}
	if shim.Runs == launches {
		t.Error("no kernel ran on the shim: the worker did not use the device network")
	}
	if opened == nil {
		t.Fatal("the device network was not opened")
	}
}
