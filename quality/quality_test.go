package quality

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestPSNR(t *testing.T) {
	a := []uint8{10, 20, 30, 40}
	if !math.IsInf(PSNR(a, a), 1) {
		t.Fatal("identical images: want +Inf")
	}
	b := []uint8{11, 21, 31, 41} // MSE 1
	if got, want := PSNR(a, b), 10*math.Log10(255*255); math.Abs(got-want) > 1e-9 {
		t.Fatalf("PSNR %g want %g", got, want)
	}
}

func TestSSIM(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	h, w := 32, 24
	a := make([]uint8, 3*h*w)
	for i := range a {
		a[i] = uint8(rng.IntN(256))
	}
	if s := SSIM(a, a, 3, h, w); math.Abs(s-1) > 1e-12 {
		t.Fatalf("SSIM of an image with itself %g, want 1", s)
	}
	noisy := make([]uint8, len(a))
	for i, v := range a {
		noisy[i] = uint8(min(max(int(v)+rng.IntN(61)-30, 0), 255))
	}
	inv := make([]uint8, len(a))
	for i, v := range a {
		inv[i] = 255 - v
	}
	sn, si := SSIM(a, noisy, 3, h, w), SSIM(a, inv, 3, h, w)
	if !(sn < 1 && sn > si) || si > 0 {
		t.Fatalf("SSIM noisy %g, inverted %g: want 1 > noisy > 0 > inverted", sn, si)
	}
	if !math.IsNaN(SSIM(a[:3*8*8], a[:3*8*8], 3, 8, 8)) {
		t.Fatal("an image smaller than the window: want NaN")
	}
}

func TestColorfulness(t *testing.T) {
	hw := 4
	gray := []uint8{10, 50, 90, 200, 10, 50, 90, 200, 10, 50, 90, 200}
	if c := Colorfulness(gray, hw); c != 0 {
		t.Fatalf("gray colourfulness %g, want 0", c)
	}
	// pure red everywhere: rg = 255, yb = 127.5, no spread
	red := []uint8{255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0}
	if got, want := Colorfulness(red, hw), 0.3*math.Sqrt(255*255+127.5*127.5); math.Abs(got-want) > 1e-9 {
		t.Fatalf("red %g want %g", got, want)
	}
}

func TestToUint8(t *testing.T) {
	got := ToUint8([]float32{-2, -1, 0, 1, 3})
	want := []uint8{0, 0, 128, 255, 255}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ToUint8: %v want %v", got, want)
		}
	}
}
