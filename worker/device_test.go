package worker

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// hostDevice is a Device that keeps its own copy of the network on the
// host: a stand-in for a GPU that shows what the worker asks of one.
type hostDevice struct {
	host, net *model.UNet
	opt       *model.Adam
	arenas    map[int]*model.Arena
	steps     int
	failStep  error
	closed    bool
}

func openHostDevice(d **hostDevice) func(*model.UNet) (Device, error) {
	return func(host *model.UNet) (Device, error) {
		net, err := model.New(host.Config)
		if err != nil {
			return nil, err
		}
		*d = &hostDevice{host: host, net: net, arenas: map[int]*model.Arena{}}
		return *d, nil
	}
}

func (d *hostDevice) Upload() error {
	copy(d.net.Params, d.host.Params)
	d.net.SetBuffers(d.host.Buffers(nil), d.host.BatchesTracked())
	return nil
}

func (d *hostDevice) LoadAdam(opt *model.Adam) error {
	o := *opt
	o.M, o.V = slices.Clone(opt.M), slices.Clone(opt.V)
	d.opt = &o
	return nil
}

func (d *hostDevice) TrainStep(x nn.Tensor, nv []float32, noise nn.Tensor, scale float32, ready func(from int)) (float32, error) {
	if d.steps++; d.failStep != nil {
		return 0, d.failStep
	}
	ar, ok := d.arenas[x.N]
	if !ok {
		var err error
		if ar, err = d.net.NewArena(x.N, x.H, x.W); err != nil {
			return 0, err
		}
		d.arenas[x.N] = ar
	}
	loss := d.net.TrainStep(ar, x, nv, noise, scale, func(from int) {
		copy(d.host.Grads[from:], d.net.Grads[from:])
		if ready != nil {
			ready(from)
		}
	})
	d.host.SetBuffers(d.net.Buffers(nil), d.net.BatchesTracked())
	return loss, nil
}

func (d *hostDevice) Apply(_ *model.Adam, grads, bufs []float32, tracked int64) error {
	d.net.Apply(d.opt, grads, bufs, tracked) // the device's own moments
	copy(d.host.Params, d.net.Params)
	d.host.SetBuffers(bufs, tracked)
	return nil
}

func (d *hostDevice) Close() { d.closed = true }

// TestWorkerOnDevice: a worker whose steps a Device runs gives the same
// losses, gradients, buffers and weights as one on the host's kernels,
// step after step; a device's error fails the step; Close releases it.
func TestWorkerOnDevice(t *testing.T) {
	plain, _ := newWorker(t)
	w, _ := newWorker(t)
	var dev *hostDevice
	if err := w.UseDevice(openHostDevice(&dev)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dev.net.Params, plain.Params()) {
		t.Fatal("UseDevice did not upload the loaded weights")
	}
	for step := range int64(3) {
		task := Task{Step: step, Epoch: 0, Indices: []int{1, 4, 6}, Seed: 5, Flip: true}
		var readyHost, readyDev []int
		want, err := plain.ComputeScaled(context.Background(), task, 0.5, func(from int) { readyHost = append(readyHost, from) })
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.ComputeScaled(context.Background(), task, 0.5, func(from int) {
			readyDev = append(readyDev, from)
			if !slices.Equal(w.Grads()[from:], plain.Grads()[from:]) {
				t.Errorf("step %d: ready(%d) before the host's gradient tail was final", step, from)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.Loss != want.Loss || got.Count != want.Count || !slices.Equal(got.Grads, want.Grads) || !slices.Equal(got.Buffers, want.Buffers) {
			t.Fatalf("step %d: the device's result differs from the host's", step)
		}
		if !slices.Equal(readyDev, readyHost) {
			t.Errorf("step %d: ready calls %v, want %v", step, readyDev, readyHost)
		}
		if err := errors.Join(plain.Apply(want.Grads, want.Buffers, step+1), w.Apply(got.Grads, got.Buffers, step+1)); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(w.Params(), plain.Params()) || !slices.Equal(w.Checksum(), plain.Checksum()) {
			t.Fatalf("step %d: the replica on the device and the host's differ after Apply", step)
		}
	}
	if dev.steps != 3 {
		t.Errorf("the device ran %d steps, want 3", dev.steps)
	}
	dev.failStep = errors.New("device lost")
	if _, err := w.Compute(context.Background(), Task{Step: 9, Indices: []int{1}}); !errors.Is(err, dev.failStep) {
		t.Errorf("a failing device: %v", err)
	}
	w.Close()
	if !dev.closed {
		t.Error("Close did not release the device")
	}
}
