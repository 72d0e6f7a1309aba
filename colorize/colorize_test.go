package colorize

import (
	"context"
	"image"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

func tinyNet(t *testing.T) *model.UNet {
	t.Helper()
	cfg := model.DefaultConfig()
	cfg.Widths, cfg.BlockDepth = []int{4, 8}, 1
	net, err := model.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	net.Init(rand.New(rand.NewPCG(1, 2)))
	return net
}

// photo is a 24×16 gray gradient: wider than tall, so that Fit mirrors it
// into the square.
func photo() *image.Gray {
	g := image.NewGray(image.Rect(0, 0, 24, 16))
	for i := range g.Pix {
		g.Pix[i] = uint8(i * 7)
	}
	return g
}

// TestPhotoSeedContract: a photo's colourisations are the sampler's on the
// fitted gray from PCG(seed, 0), written out by hand here as the contract
// says (internal/rngs), so that the CLI and the web app, which both call
// Photo, agree for a seed; another seed gives other colours.
func TestPhotoSeedContract(t *testing.T) {
	const size, samples, steps, seed = 8, 2, 3, 42
	net := tinyNet(t)
	p, err := New(net, size, samples, true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in := Fit(photo(), size)
	if in.Frame.Dx() != size || in.Frame.Dy() >= size {
		t.Fatalf("frame %v of a 3:2 photo in %d²", in.Frame, size)
	}
	res, err := p.Photo(context.Background(), in, samples, steps, seed, nil)
	if err != nil {
		t.Fatal(err)
	}

	s, err := model.NewSampler(net, samples, size, size)
	if err != nil {
		t.Fatal(err)
	}
	s.Clip = true
	gray := nn.NewTensor(1, 1, size, size)
	for i, v := range in.Gray.Pix {
		gray.Data[i] = float32(v)/127.5 - 1
	}
	want, err := s.Colorize(context.Background(), gray, samples, steps, rand.New(rand.NewPCG(seed, 0)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k := range samples {
		w := p.image(want.Image(k))
		if !slices.Equal(res.Samples[k].Pix, w.Pix) {
			t.Fatalf("sample %d differs from the sampler's with PCG(seed, 0)", k)
		}
		if full := res.Full(k); full.Bounds() != in.Lum.Bounds() {
			t.Errorf("full result %v, want the photo's %v", full.Bounds(), in.Lum.Bounds())
		}
		if small := res.Small(k); small.Bounds() != in.Frame {
			t.Errorf("model-size result %v, want the frame %v", small.Bounds(), in.Frame)
		}
	}
	other, err := p.Photo(context.Background(), in, samples, steps, seed+1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(other.Samples[0].Pix, res.Samples[0].Pix) {
		t.Error("another seed gave the same colours")
	}
}

// TestCheck: the limits of a request, in one place for the CLI and the
// web app.
func TestCheck(t *testing.T) {
	for _, c := range []struct {
		steps, samples int
		want           string
	}{
		{MinSteps, MinSamples, ""}, {MaxSteps, MaxSamples, ""},
		{MinSteps - 1, 1, "steps 9: must be 10 to 100"}, {MaxSteps + 1, 1, "steps 101"},
		{50, 0, "samples 0: must be 1 to 8"}, {50, MaxSamples + 1, "samples 9"},
	} {
		err := Check(c.steps, c.samples)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%d, %d) = %v, want %q", c.steps, c.samples, err, c.want)
		}
	}
}
