package serve

import (
	"context"
	"fmt"
	"image"
	"sync"
	"testing"

	_ "github.com/tinct/tinct/cuda/shim" // cuda-shim: the CUDA backend on the CPU
	"github.com/tinct/tinct/nn"
)

// shimDevice opens cuda-shim instances (the CUDA backend with its kernels
// compiled by g++) and counts what is open and how many network calls each
// makes (one embedding a call).
type shimDevice struct {
	mu          sync.Mutex
	open, calls int
}

type countedCompute struct {
	nn.Compute
	d *shimDevice
}

func (c countedCompute) Embed(nv, speeds []float32, out nn.Tensor) {
	c.d.mu.Lock()
	c.d.calls++
	c.d.mu.Unlock()
	c.Compute.Embed(nv, speeds, out)
}

func (c countedCompute) Close() {
	c.d.mu.Lock()
	c.d.open--
	c.d.mu.Unlock()
	c.Compute.Close()
}

func (d *shimDevice) compute() (nn.Compute, error) {
	be, err := nn.NewCompute("cuda-shim")
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.open++
	return countedCompute{be, d}, nil
}

// TestColorizeOnDevice: with Options.Compute the network calls of a
// colorization run on the device backend (once a step) and give what the
// host gives for the same seed, up to the products' rounding; each model
// goes to the device once, a model leaving the cache is freed there, and
// Close frees the rest.
func TestColorizeOnDevice(t *testing.T) {
	if be, err := nn.NewCompute("cuda-shim"); err != nil {
		t.Skipf("cuda-shim: %v", err)
	} else {
		be.Close()
	}
	dir, store := tinyStore(t)
	_, host := newTestServer(t, Options{Store: dir})
	dev := &shimDevice{}
	srv, ts := newTestServer(t, Options{Store: dir, Compute: dev.compute})
	file := encodePNG(t, photo(40, 30))
	const steps = 10
	body, ct := form(t, file, "steps", fmt.Sprint(steps), "samples", "2", "seed", "7")
	want := readStream(t, post(t, context.Background(), host.URL+"/api/colorize", body, ct))
	got := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if got.done == nil || want.done == nil || len(got.done.Images) != len(want.done.Images) {
		t.Fatalf("colorization on the device: events %v", got.order)
	}
	for i := range want.done.Images {
		a, b := decodeDataURL(t, got.done.Images[i]), decodeDataURL(t, want.done.Images[i])
		if d := maxPixelDiff(a, b); d > 2 {
			t.Errorf("image %d: the device's colourisation differs from the host's by %d levels", i, d)
		}
	}
	if dev.calls != steps {
		t.Errorf("%d network calls on the device for %d steps", dev.calls, steps)
	}
	body1, ct1 := form(t, file, "steps", fmt.Sprint(steps), "samples", "1", "seed", "7")
	readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body1, ct1)) // another sampler, same model
	if dev.open != 1 {
		t.Errorf("%d networks on the device after two colorizations with one model", dev.open)
	}
	// More checkpoints than the cache keeps: the evicted ones are freed.
	ctx := context.Background()
	for i := 2; i <= 2+maxCachedNets; i++ {
		name := fmt.Sprintf("epoch-%06d", i)
		saveTiny(t, store, name, int64(10*i), uint64(i))
		m, err := srv.models.get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.models.pipeline(m, 1); err != nil {
			t.Fatal(err)
		}
	}
	if dev.open > maxCachedNets {
		t.Errorf("%d networks on the device, with a cache of %d", dev.open, maxCachedNets)
	}
	srv.Close()
	if dev.open != 0 {
		t.Errorf("%d networks still on the device after Close", dev.open)
	}
}

// maxPixelDiff is the largest difference of a colour channel, in 8-bit
// levels.
func maxPixelDiff(a, b image.Image) int {
	worst := 0
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			p, q := [3]uint32{}, [3]uint32{}
			p[0], p[1], p[2], _ = a.At(x, y).RGBA()
			q[0], q[1], q[2], _ = b.At(x, y).RGBA()
			for k := range 3 {
				d := int(p[k]>>8) - int(q[k]>>8)
				worst = max(worst, d, -d)
			}
		}
	}
	return worst
}
