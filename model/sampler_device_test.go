package model

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tinct/tinct/nn"
)

// hostForwarder is a Forwarder that runs a network on its own arena: a
// stand-in for a device, which must give what the sampler's own calls give.
type hostForwarder struct {
	net   *UNet
	ar    *Arena
	calls int
	fail  error
}

func (f *hostForwarder) Forward(x nn.Tensor, nv []float32, out []float32) error {
	f.calls++
	if f.fail != nil && f.calls == 3 {
		return f.fail
	}
	copy(out, f.net.Forward(f.ar, x, nv, false).Data)
	return nil
}

// TestSamplerOn: a sampler whose network calls a Forwarder makes gives the
// same colourisations as one on the host's kernels, calls it once a step,
// and stops with its error.
func TestSamplerOn(t *testing.T) {
	u := tinyNet(t, 3)
	gray := nn.NewTensor(1, 1, 8, 8)
	for i := range gray.Data {
		gray.Data[i] = float32(i%7)/3 - 1
	}
	host, err := NewSampler(u, 2, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := u.NewArena(2, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	f := &hostForwarder{net: u, ar: ar}
	dev, err := NewSamplerOn(u, f, 2, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	if dev.arena != nil {
		t.Error("a sampler on a Forwarder allocated a host arena")
	}
	for _, clip := range []bool{false, true} {
		host.Clip, dev.Clip = clip, clip
		want, err := host.Colorize(context.Background(), gray, 2, 6, rand.New(rand.NewPCG(1, 2)), nil)
		if err != nil {
			t.Fatal(err)
		}
		want.Data = slices.Clone(want.Data)
		f.calls = 0
		got, err := dev.Colorize(context.Background(), gray, 2, 6, rand.New(rand.NewPCG(1, 2)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Data, want.Data) {
			t.Errorf("clip %v: the Forwarder's colourisation differs from the host's", clip)
		}
		if f.calls != 6 {
			t.Errorf("clip %v: %d network calls for 6 steps", clip, f.calls)
		}
	}
	f.fail, f.calls = errors.New("device lost"), 0
	if _, err := dev.Colorize(context.Background(), gray, 2, 6, rand.New(rand.NewPCG(1, 2)), nil); err == nil || err.Error() != "device lost" {
		t.Errorf("a failing Forwarder: %v", err)
	}
	if _, err := NewSamplerOn(u, f, 2, 7, 8); err == nil {
		t.Error("a sampler on a Forwarder took 7×8 images, which the network's levels do not divide")
	}
}
