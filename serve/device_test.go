package serve

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// fakeDevice puts networks "on a device" that is a second arena on the
// host, counting what it holds.
type fakeDevice struct {
	mu       sync.Mutex
	calls    int
	held     map[*model.UNet]bool
	released int
}

type fakeForwarder struct {
	d   *fakeDevice
	net *model.UNet
	ars map[int]*model.Arena
}

func (f *fakeForwarder) Forward(x nn.Tensor, nv []float32, out []float32) error {
	ar, ok := f.ars[x.N]
	if !ok {
		var err error
		if ar, err = f.net.NewArena(x.N, x.H, x.W); err != nil {
			return err
		}
		f.ars[x.N] = ar
	}
	f.d.mu.Lock()
	f.d.calls++
	f.d.mu.Unlock()
	copy(out, f.net.Forward(ar, x, nv, false).Data)
	return nil
}

func (d *fakeDevice) open(net *model.UNet) (model.Forwarder, func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held == nil {
		d.held = map[*model.UNet]bool{}
	}
	if d.held[net] {
		return nil, nil, fmt.Errorf("network put on the device twice")
	}
	d.held[net] = true
	return &fakeForwarder{d: d, net: net, ars: map[int]*model.Arena{}}, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.held, net)
		d.released++
	}, nil
}

// TestColorizeOnDevice: with Options.Device the network calls of a
// colorization run on the device (once a step), give what the host gives
// for the same seed, each model goes to the device once, a model leaving
// the cache is released from it, and Close releases the rest.
func TestColorizeOnDevice(t *testing.T) {
	dir, store := tinyStore(t)
	_, host := newTestServer(t, Options{Store: dir})
	dev := &fakeDevice{}
	srv, ts := newTestServer(t, Options{Store: dir, Device: dev.open})
	file := encodePNG(t, photo(40, 30))
	const steps = 10
	body, ct := form(t, file, "steps", fmt.Sprint(steps), "samples", "2", "seed", "7")
	want := readStream(t, post(t, context.Background(), host.URL+"/api/colorize", body, ct))
	got := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if got.done == nil || want.done == nil || !slices.Equal(got.done.Images, want.done.Images) {
		t.Fatalf("the device's colourisation differs from the host's (events %v)", got.order)
	}
	if dev.calls != steps {
		t.Errorf("%d network calls on the device for %d steps", dev.calls, steps)
	}
	body1, ct1 := form(t, file, "steps", fmt.Sprint(steps), "samples", "1", "seed", "7")
	readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body1, ct1)) // another sampler, same model
	if len(dev.held) != 1 {
		t.Errorf("%d networks on the device after two colorizations with one model", len(dev.held))
	}
	// More checkpoints than the cache keeps: the evicted ones are released.
	ctx := context.Background()
	for i := 2; i <= 2+maxCachedNets; i++ {
		name := fmt.Sprintf("epoch-%06d", i)
		saveTiny(t, store, name, int64(10*i), uint64(i))
		m, err := srv.models.get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.models.sampler(m, 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(dev.held) > maxCachedNets || dev.released == 0 {
		t.Errorf("%d networks held, %d released, with a cache of %d", len(dev.held), dev.released, maxCachedNets)
	}
	srv.Close()
	if len(dev.held) != 0 {
		t.Errorf("%d networks still on the device after Close", len(dev.held))
	}
}
