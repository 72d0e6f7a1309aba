package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"math"
	"testing"

	"github.com/tinct/tinct/internal/lanczos"
)

func TestResizeConstant(t *testing.T) {
	c := color.NRGBA{10, 200, 77, 255}
	tests := []struct{ w, h, size int }{
		{1, 1, 16},
		{1, 50, 8},
		{50, 1, 8},
		{2, 3, 64},
		{33, 77, 32},
		{256, 256, 128},
		{300, 200, 7},
		{64, 64, 200},
		{720, 360, 128},
	}
	for _, tc := range tests {
		out := Resize(solid(tc.w, tc.h, c), tc.size)
		if got := out.Bounds(); got != image.Rect(0, 0, tc.size, tc.size) {
			t.Errorf("%dx%d -> %d: bounds %v", tc.w, tc.h, tc.size, got)
			continue
		}
		for i := 0; i < len(out.Pix); i += 4 {
			if p := out.Pix[i : i+4]; p[0] != c.R || p[1] != c.G || p[2] != c.B || p[3] != 255 {
				t.Errorf("%dx%d -> %d: pixel %d = %v, want %v", tc.w, tc.h, tc.size, i/4, p, c)
				break
			}
		}
	}
}

// TestResizeGradient resizes a linear ramp and compares with the ramp's
// analytic value at each output pixel's center. Lanczos-3 reproduces a
// ramp up to a small ripple inside the image; near the borders the
// truncated, renormalized kernel is one-sided (and, when enlarging, the
// first and last output pixels lie outside the outermost input centers,
// where the ramp would leave [0, 255]), so the tolerance is looser.
func TestResizeGradient(t *testing.T) {
	tests := []struct {
		name         string
		in, out      int
		slope        float64 // value per input pixel
		inner, outer float64 // tolerances inside and within the kernel's reach of a border
	}{
		{"down 4x", 256, 64, 1, 0.51, 2},
		{"down 2.5x", 250, 100, 1, 0.51, 1.5},
		{"down 3x ragged", 200, 66, 1, 0.51, 2},
		{"up 4x", 32, 128, 8, 0.51, 3.01},
		{"same size", 100, 100, 2, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := image.NewGray(image.Rect(0, 0, tc.in, tc.in))
			for y := 0; y < tc.in; y++ {
				for x := 0; x < tc.in; x++ {
					img.Pix[y*img.Stride+x] = uint8(tc.slope * float64(x))
				}
			}
			out := Resize(img, tc.out)
			scale := float64(tc.in) / float64(tc.out)
			margin := 3 * max(1, tc.out/tc.in) // the kernel's reach, in output pixels
			worstIn, worstOut := 0.0, 0.0
			for y := 0; y < tc.out; y++ {
				for x := 0; x < tc.out; x++ {
					center := (float64(x)+0.5)*scale - 0.5 // in input pixel indices
					want := tc.slope * center
					got := float64(out.Pix[out.PixOffset(x, y)])
					d := math.Abs(got - want)
					if x >= margin && x < tc.out-margin {
						worstIn = max(worstIn, d)
					} else {
						worstOut = max(worstOut, d)
					}
					if g := out.Pix[out.PixOffset(x, y)+1]; g != uint8(got) {
						t.Fatalf("gray input gave unequal channels at %d,%d", x, y)
					}
				}
			}
			t.Logf("max error %.3f inside, %.3f at borders", worstIn, worstOut)
			if worstIn > tc.inner || worstOut > tc.outer {
				t.Errorf("max error %.3f inside (limit %.2f), %.3f at borders (limit %.2f)", worstIn, tc.inner, worstOut, tc.outer)
			}
		})
	}
}

func TestResizeCenterCrop(t *testing.T) {
	red, blue := color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 255}
	for _, wide := range []bool{true, false} {
		w, h := 300, 100
		if !wide {
			w, h = 100, 300
		}
		img := solid(w, h, blue)
		sq := centerSquare(img.Bounds())
		for y := sq.Min.Y; y < sq.Max.Y; y++ {
			for x := sq.Min.X; x < sq.Max.X; x++ {
				img.SetNRGBA(x, y, red)
			}
		}
		out := Resize(img, 24)
		for i := 0; i < len(out.Pix); i += 4 {
			if out.Pix[i] != 255 || out.Pix[i+2] != 0 {
				t.Fatalf("wide=%v: pixel %d = %v, want pure red (crop leaked the sides)", wide, i/4, out.Pix[i:i+4])
			}
		}
	}
}

func TestResizeOddInputs(t *testing.T) {
	tests := []struct {
		name string
		img  image.Image
		size int
		want image.Rectangle
	}{
		{"nil", nil, 8, image.Rect(0, 0, 8, 8)},
		{"empty", image.NewRGBA(image.Rect(5, 5, 5, 9)), 8, image.Rect(0, 0, 8, 8)},
		{"size 0", solid(10, 10, color.NRGBA{1, 2, 3, 255}), 0, image.Rectangle{}},
		{"size -3", solid(10, 10, color.NRGBA{1, 2, 3, 255}), -3, image.Rectangle{}},
		{"1 px wide", pattern(1, 100, 1), 64, image.Rect(0, 0, 64, 64)},
		{"1 px tall", pattern(100, 1, 2), 5, image.Rect(0, 0, 5, 5)},
		{"offset bounds", pattern(40, 40, 3).SubImage(image.Rect(7, 9, 30, 38)), 16, image.Rect(0, 0, 16, 16)},
		{"paletted", image.NewPaletted(image.Rect(0, 0, 9, 9), color.Palette{color.Black}), 4, image.Rect(0, 0, 4, 4)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := Resize(tc.img, tc.size)
			if out.Bounds() != tc.want {
				t.Errorf("bounds %v, want %v", out.Bounds(), tc.want)
			}
		})
	}
	// The 1-px-wide plane through the resampler directly, without the crop.
	got := resample(1, 9, 3, func(y int, dst []float32) { dst[0], dst[1], dst[2] = 10, 20, 30 })
	for i := 0; i < len(got); i += 3 {
		if math.Abs(float64(got[i]-10)) > 1e-4 || math.Abs(float64(got[i+2]-30)) > 1e-4 {
			t.Fatalf("1 px upscaled to 9: %v", got[i:i+3])
		}
	}
}

// TestResizeStraightAlpha checks that transparent pixels keep their color,
// as with Pillow's convert("RGB"), which drops alpha.
func TestResizeStraightAlpha(t *testing.T) {
	out := Resize(solid(40, 40, color.NRGBA{200, 100, 50, 0}), 10)
	if p := out.Pix[0:4]; p[0] != 200 || p[1] != 100 || p[2] != 50 || p[3] != 255 {
		t.Fatalf("got %v, want [200 100 50 255]", p)
	}
}

func TestLanczosWeights(t *testing.T) {
	for _, tc := range []struct{ in, out int }{{1, 1}, {1, 7}, {7, 1}, {256, 128}, {128, 256}, {720, 64}, {5, 3}, {3, 5}} {
		fw := lanczos.Weights(tc.in, tc.out)
		for o := 0; o < tc.out; o++ {
			ws := fw.W[fw.Off[o]:fw.Off[o+1]]
			if fw.Lo[o] < 0 || fw.Lo[o]+len(ws) > tc.in || len(ws) == 0 {
				t.Fatalf("%d->%d output %d: window [%d,%d) outside [0,%d)", tc.in, tc.out, o, fw.Lo[o], fw.Lo[o]+len(ws), tc.in)
			}
			sum := 0.0
			for _, w := range ws {
				sum += float64(w)
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Fatalf("%d->%d output %d: weights sum to %v", tc.in, tc.out, o, sum)
			}
		}
	}
	// 4 -> 2: output 0 is centered at input coordinate 1.0, the kernel is
	// stretched 2x, and all 4 inputs are in reach: weights are
	// L((x + 0.5 - 1) / 2), normalized.
	fw := lanczos.Weights(4, 2)
	var want [4]float64
	sum := 0.0
	for x := range want {
		d := math.Pi * (float64(x) + 0.5 - 1) / 2
		want[x] = math.Sin(d) / d * math.Sin(d/3) / (d / 3)
		sum += want[x]
	}
	if fw.Lo[0] != 0 || fw.Off[1] != 4 {
		t.Fatalf("4->2 output 0 reads %d inputs from %d, want 4 from 0", fw.Off[1], fw.Lo[0])
	}
	for x := range want {
		if got := float64(fw.W[x]); math.Abs(got-want[x]/sum) > 1e-6 {
			t.Errorf("4->2 weight %d = %v, want %v", x, got, want[x]/sum)
		}
	}
	if lanczos.Kernel(0) != 1 || lanczos.Kernel(3) != 0 || lanczos.Kernel(-3) != 0 || math.Abs(lanczos.Kernel(1)) > 1e-15 {
		t.Fatalf("kernel values wrong: L(0)=%v L(1)=%v L(±3)=%v,%v", lanczos.Kernel(0), lanczos.Kernel(1), lanczos.Kernel(3), lanczos.Kernel(-3))
	}
}

// pilL is Pillow's rgb2l (libImaging/Convert.c): L24(rgb) >> 16.
func pilL(r, g, b int) uint8 { return uint8((r*19595 + g*38470 + b*7471 + 0x8000) >> 16) }

func TestToGray(t *testing.T) {
	tests := []struct {
		r, g, b uint8
		want    uint8
	}{
		{0, 0, 0, 0},
		{255, 255, 255, 255},
		{255, 0, 0, 76},
		{0, 255, 0, 150},
		{0, 0, 255, 29},
		{100, 150, 200, 141},
		{12, 34, 56, 30},
		{128, 128, 128, 128},
		// Where Pillow's 16-bit fixed point and (299R+587G+114B+500)/1000
		// disagree: 0.114·250 = 28.5 exactly, while 7471·250/65536 < 28.5.
		{0, 0, 250, 28},
		{0, 4, 168, 21},
	}
	img := image.NewNRGBA(image.Rect(3, 4, 3+len(tests), 5))
	for i, tc := range tests {
		img.SetNRGBA(3+i, 4, color.NRGBA{tc.r, tc.g, tc.b, 255})
	}
	g := ToGray(img)
	if g.Bounds() != img.Bounds() {
		t.Fatalf("bounds %v, want %v", g.Bounds(), img.Bounds())
	}
	for i, tc := range tests {
		if got := g.GrayAt(3+i, 4).Y; got != tc.want || got != pilL(int(tc.r), int(tc.g), int(tc.b)) {
			t.Errorf("gray(%d,%d,%d) = %d, want %d", tc.r, tc.g, tc.b, got, tc.want)
		}
	}
	// Over every color: equal to Pillow, within one level of the /1000
	// formula, and exact on grays.
	for r := 0; r < 256; r++ {
		for gg := 0; gg < 256; gg++ {
			for b := 0; b < 256; b++ {
				got := luma(uint8(r), uint8(gg), uint8(b))
				if got != pilL(r, gg, b) {
					t.Fatalf("luma(%d,%d,%d) = %d, Pillow %d", r, gg, b, got, pilL(r, gg, b))
				}
				if d := int(got) - (r*299+gg*587+b*114+500)/1000; d < -1 || d > 1 {
					t.Fatalf("luma(%d,%d,%d) = %d, far from the 1000-scaled formula", r, gg, b, got)
				}
			}
		}
		if luma(uint8(r), uint8(r), uint8(r)) != uint8(r) {
			t.Fatalf("gray %d not preserved", r)
		}
	}
}

func TestToGrayInputs(t *testing.T) {
	src := pattern(17, 13, 4)
	want := ToGray(src)

	// A JPEG decodes to YCbCr: ToGray must go through RGB as Pillow does.
	dec, err := Decode(bytes.NewReader(encodeJPEG(t, src)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dec.(*image.YCbCr); !ok {
		t.Fatalf("JPEG decoded to %T, want *image.YCbCr", dec)
	}
	gy := ToGray(dec)
	rgba := image.NewRGBA(dec.Bounds())
	for y := 0; y < 13; y++ {
		for x := 0; x < 17; x++ {
			rgba.Set(x, y, dec.At(x, y))
		}
	}
	if !bytes.Equal(gy.Pix, ToGray(rgba).Pix) {
		t.Error("ToGray(YCbCr) differs from ToGray of the same pixels as RGBA")
	}

	// Gray input is copied unchanged.
	if again := ToGray(want); !bytes.Equal(again.Pix, want.Pix) || &again.Pix[0] == &want.Pix[0] {
		t.Error("ToGray of a gray image should be an equal copy")
	}
	if g := ToGray(nil); !g.Bounds().Empty() {
		t.Error("ToGray(nil) should be empty")
	}
}

// pngHeader returns a PNG signature and IHDR declaring a w×h RGB image,
// without pixel data.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestDecode(t *testing.T) {
	good := encodePNG(t, pattern(33, 35, 1))
	tests := []struct {
		name     string
		data     []byte
		tooLarge bool
		ok       bool
	}{
		{"png", good, false, true},
		{"jpeg", encodeJPEG(t, pattern(40, 32, 2)), false, true},
		{"empty", nil, false, false},
		{"text", []byte("hello, not an image"), false, false},
		{"truncated png", good[:len(good)/2], false, false},
		{"huge header", pngHeader(100000, 100000), true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Decode(bytes.NewReader(tc.data))
			if tc.ok != (err == nil) || tc.ok != (img != nil) {
				t.Fatalf("img %v, err %v; want ok=%v", img != nil, err, tc.ok)
			}
			if errors.Is(err, errTooLarge) != tc.tooLarge {
				t.Fatalf("err %v, want too-large=%v", err, tc.tooLarge)
			}
		})
	}
}
