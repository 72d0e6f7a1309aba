package serve

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinct/tinct/chroma"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/internal/fuzzcheck"
)

// pngChunk appends a PNG chunk.
func pngChunk(b *bytes.Buffer, typ string, data []byte) {
	binary.Write(b, binary.BigEndian, uint32(len(data)))
	c := append([]byte(typ), data...)
	b.Write(c)
	binary.Write(b, binary.BigEndian, crc32.ChecksumIEEE(c))
}

// exifOrientation is an EXIF block (big-endian TIFF) holding only the
// orientation tag.
func exifOrientation(o int) []byte {
	b := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")
	b[19] = byte(o)
	return b
}

// zerosPNG is an 8-bit RGB PNG of w×h black pixels (a few hundred KB at
// 7000², 196 MB decoded), with an eXIf orientation when o > 1.
func zerosPNG(w, h, o int) []byte {
	b := pngHeader(w, h, 2, 0)
	if o > 1 {
		pngChunk(b, "eXIf", exifOrientation(o))
	}
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+3*w)
	for range h {
		zw.Write(row)
	}
	zw.Close()
	pngChunk(b, "IDAT", z.Bytes())
	pngChunk(b, "IEND", nil)
	return b.Bytes()
}

// pngHeader starts an 8-bit PNG of w×h: the signature and IHDR with the
// colour type and interlace method given.
func pngHeader(w, h int, colorType, interlace byte) *bytes.Buffer {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9], ihdr[12] = 8, colorType, interlace
	pngChunk(&b, "IHDR", ihdr)
	return &b
}

// interlacedGrayPNG encodes an 8-bit gray image with Adam7 interlacing
// (image/png writes none).
func interlacedGrayPNG(img *image.Gray) []byte {
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	b := pngHeader(w, h, 0, 1)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	for _, p := range [][4]int{{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}} {
		for y := p[1]; y < h; y += p[3] {
			if p[0] >= w {
				break
			}
			zw.Write([]byte{0})
			for x := p[0]; x < w; x += p[2] {
				zw.Write([]byte{img.GrayAt(x, y).Y})
			}
		}
	}
	zw.Close()
	pngChunk(b, "IDAT", z.Bytes())
	pngChunk(b, "IEND", nil)
	return b.Bytes()
}

// withJPEGSize rewrites the size a JPEG's start of frame declares (its
// scans then end early: what a hostile header does).
func withJPEGSize(data []byte, w, h int) []byte {
	out := bytes.Clone(data)
	for i := 2; i+9 < len(out); {
		m := out[i+1]
		n := int(binary.BigEndian.Uint16(out[i+2:]))
		if m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC {
			binary.BigEndian.PutUint16(out[i+5:], uint16(h))
			binary.BigEndian.PutUint16(out[i+7:], uint16(w))
			return out
		}
		i += 2 + n
	}
	return out
}

// TestDecodePlan: the plan of a decoding, read from the header, covers what
// each stage allocates (measured), for every kind of PNG and JPEG the
// decoders make a different image of: the decoder's peak (including a
// progressive JPEG's coefficients and an RGB or CMYK JPEG's conversion,
// and JPEGs whose header declares more than their data holds), the gray
// copy, the turned gray and the network's input. It is not far above
// either: a budget that over-counts refuses photos it could take.
func TestDecodePlan(t *testing.T) {
	const slack = 512 << 10 // decoder state, tables, readers
	enc := func(img image.Image) []byte { return encodePNG(t, img) }
	rgba := photo(640, 400)
	nrgba := image.NewNRGBA(rgba.Rect)
	gray := image.NewGray(rgba.Rect)
	gray16 := image.NewGray16(rgba.Rect)
	rgba64 := image.NewRGBA64(rgba.Rect)
	pal := image.NewPaletted(rgba.Rect, color.Palette{color.Black, color.White, color.RGBA{200, 10, 10, 255}})
	for i := range gray.Pix {
		x, y := i%640, i/640
		c := rgba.RGBAAt(x, y)
		nrgba.SetNRGBA(x, y, color.NRGBA{c.R, c.G, c.B, uint8(i)})
		gray.Pix[i] = c.G
		gray16.SetGray16(x, y, color.Gray16{uint16(c.R) * 257})
		rgba64.SetRGBA64(x, y, color.RGBA64{uint16(c.R) * 257, uint16(c.G) * 250, uint16(c.B) * 255, 0xffff})
		pal.Pix[i] = uint8(i % 3)
	}
	var j420, jgray bytes.Buffer
	jpeg.Encode(&j420, rgba, &jpeg.Options{Quality: 90})
	jpeg.Encode(&jgray, gray, &jpeg.Options{Quality: 90})
	cases := []struct {
		name string
		data []byte
	}{
		{"png rgb", enc(rgba)},
		{"png rgba", enc(nrgba)},
		{"png gray", enc(gray)},
		{"png gray16", enc(gray16)},
		{"png rgb16", enc(rgba64)},
		{"png paletted", enc(pal)},
		{"png interlaced", interlacedGrayPNG(gray)},
		{"png rgb orientation 6", zerosPNG(640, 400, 6)},
		{"jpeg 4:2:0", j420.Bytes()},
		{"jpeg gray", jgray.Bytes()},
	}
	// what image/jpeg's own tests decode: progressive, RGB-coded, CMYK,
	// every subsampling; each also with a header declaring 8 times its
	// sides
	dir := filepath.Join(runtime.GOROOT(), "src", "image", "testdata")
	for _, name := range []string{"video-001.progressive.jpeg", "video-001.q50.444.progressive.jpeg", "video-001.q50.410.progressive.jpeg",
		"video-001.rgb.jpeg", "video-001.cmyk.jpeg", "video-001.q50.422.jpeg", "video-005.gray.q50.progressive.jpeg"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Logf("skipped %s: %v", name, err)
			continue
		}
		cfg, _ := jpeg.DecodeConfig(bytes.NewReader(b))
		cases = append(cases, struct {
			name string
			data []byte
		}{name, b}, struct {
			name string
			data []byte
		}{name + " ×8", withJPEGSize(b, 8*cfg.Width, 8*cfg.Height)})
	}
	s := fuzzServer()
	s.opts.MaxPixels = 1 << 30
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, format, err := image.DecodeConfig(bytes.NewReader(c.data))
			if err != nil {
				t.Fatal(err)
			}
			const size = 64
			p := planDecode(cfg, format, c.data, size)
			px := int64(cfg.Width) * int64(cfg.Height)
			var img image.Image
			// the least of three: allocations of other goroutines (earlier
			// tests' servers, a browser) only add
			dec := uint64(math.MaxUint64)
			for range 3 {
				img = nil
				dec = min(dec, fuzzcheck.AllocatedBytes(func() { img, err = s.decodeRaw(context.Background(), c.data, format) }))
			}
			t.Logf("%d×%d %v: decoder %d allocated, planned %d (%.2f B/px); peak %d", cfg.Width, cfg.Height, cfg.ColorModel == color.GrayModel, dec, p.decoder, p.bpp, p.peak)
			if dec > uint64(p.decoder)+slack {
				t.Errorf("the decoder allocated %d bytes, more than the planned %d", dec, p.decoder)
			}
			if err != nil {
				if !strings.Contains(c.name, "×8") {
					t.Fatalf("decode: %v", err)
				}
				return // a header that lies: its allocation is what counts
			}
			if !strings.Contains(c.name, "×8") && float64(p.decoder) > 1.25*float64(dec)+slack {
				t.Errorf("planned %d bytes for a decoder that allocated %d", p.decoder, dec)
			}
			var g *image.Gray
			conv := fuzzcheck.AllocatedBytes(func() {
				if gi, ok := img.(*image.Gray); ok && gi.Rect.Min == (image.Point{}) {
					g = gi
				} else {
					g = toGray(img)
				}
			})
			if first := p.image + int64(conv); p.peak < first || conv > 0 && !p.grayCopy {
				t.Errorf("the gray copy allocated %d bytes besides the %d of the image: %d, more than the peak %d (gray copy planned: %v)", conv, p.image, first, p.peak, p.grayCopy)
			}
			turned := fuzzcheck.AllocatedBytes(func() { g = dataset.Orient(g, p.orientation).(*image.Gray) })
			fit := fuzzcheck.AllocatedBytes(func() { chroma.Fit(g, size) })
			if px+int64(turned) > p.rest || px+int64(fit) > p.rest {
				t.Errorf("turning the gray allocated %d bytes, fitting it %d, beside its %d: more than the planned %d", turned, fit, px, p.rest)
			}
		})
	}
}

// TestToGray: serve's gray conversion is dataset.ToGray's, pixel for
// pixel, for every type a decoder makes (with straight and premultiplied
// alpha), and makes no garbage beyond the gray and a row.
func TestToGray(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := image.Rect(0, 0, 97, 61)
	u16 := func() uint16 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return 0xffff
		}
		return uint16(rng.Uint32())
	}
	rgba64, nrgba64, gray16, cmyk := image.NewRGBA64(r), image.NewNRGBA64(r), image.NewGray16(r), image.NewCMYK(r)
	pal := image.NewPaletted(r, color.Palette{color.NRGBA{200, 100, 50, 128}, color.RGBA{10, 20, 30, 255}, color.NRGBA{1, 2, 3, 0}, color.Gray{77}, color.RGBA64{0x8000, 0x4000, 0x2000, 0x9000}})
	for y := range r.Dy() {
		for x := range r.Dx() {
			a := u16()
			rgba64.SetRGBA64(x, y, color.RGBA64{min(u16(), a), min(u16(), a), min(u16(), a), a})
			nrgba64.SetNRGBA64(x, y, color.NRGBA64{u16(), u16(), u16(), u16()})
			gray16.SetGray16(x, y, color.Gray16{u16()})
			cmyk.SetCMYK(x, y, color.CMYK{uint8(rng.Uint32()), uint8(rng.Uint32()), uint8(rng.Uint32()), uint8(rng.Uint32())})
			pal.SetColorIndex(x, y, uint8(rng.IntN(len(pal.Palette))))
		}
	}
	for _, img := range []image.Image{rgba64, nrgba64, gray16, cmyk, pal, photo(40, 30)} {
		want := dataset.ToGray(img)
		var got *image.Gray
		n := uint64(math.MaxUint64)
		for range 3 { // the least of three: other goroutines' allocations only add
			n = min(n, fuzzcheck.AllocatedBytes(func() { got = toGray(img) }))
		}
		if !bytes.Equal(got.Pix, want.Pix) || got.Rect != want.Rect {
			t.Errorf("%T: toGray differs from dataset.ToGray", img)
		}
		if px := uint64(r.Dx() * r.Dy()); n > px+64<<10 {
			t.Errorf("%T: toGray allocated %d bytes for a %d-pixel gray", img, n, px)
		}
	}
}

// TestMemBudget: reservations wait in order (a small one does not pass a
// large one that came first), a wait ends, more than the budget is refused
// at once, kept results make room when a request needs it, and large
// releases return memory to the operating system before others get it.
func TestMemBudget(t *testing.T) {
	const MiB = 1 << 20
	ctx := context.Background()
	b := newMemBudget(200 * MiB)
	var frees int
	b.freeOS = func() { frees++ }
	if _, err := b.reserve(ctx, 201*MiB, time.Second); !errors.Is(err, errOverBudget) {
		t.Errorf("more than the budget: %v", err)
	}
	g1, err := b.reserve(ctx, 160*MiB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.reserve(ctx, 50*MiB, 20*time.Millisecond); !errors.Is(err, errBudgetBusy) {
		t.Errorf("50 of 200 MiB with 160 taken: %v, want errBudgetBusy", err)
	}
	granted := make(chan string, 2)
	done := make(chan *memGrant, 2)
	for i, w := range []struct {
		name string
		n    int64
	}{{"large", 100 * MiB}, {"small", 30 * MiB}} {
		go func() {
			g, err := b.reserve(ctx, w.n, 5*time.Second)
			if err != nil {
				t.Errorf("%s: %v", w.name, err)
			}
			granted <- w.name
			done <- g
		}()
		for { // in line in this order
			b.mu.Lock()
			n := len(b.line)
			b.mu.Unlock()
			if n == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(30 * time.Millisecond)
	if len(granted) != 0 {
		t.Errorf("%s granted while 160 MiB were held and a 100 MiB one was first in line (the 30 MiB one fits, but came later)", <-granted)
	}
	g1.shrink(100 * MiB) // 60 MiB back: returned to the OS, and the large one fits
	if frees != 1 {
		t.Errorf("%d returns to the OS after giving back 60 MiB, want 1", frees)
	}
	if first := waitFor(t, granted, "the large reservation"); first != "large" {
		t.Errorf("granted first: %s, want large (first in line)", first)
	}
	time.Sleep(20 * time.Millisecond)
	if len(granted) != 0 {
		t.Errorf("the small one granted with 200 of 200 MiB taken")
	}
	g1.release()
	waitFor(t, granted, "the small reservation")
	(<-done).release()
	(<-done).release()
	if r, _ := b.inUse(); r != 0 {
		t.Errorf("%d bytes reserved after every release", r)
	}

	// kept results count and are evicted, oldest first, to make room
	kept := []int64{70 * MiB, 70 * MiB, 50 * MiB}
	b.kept = func() int64 {
		var n int64
		for _, k := range kept {
			n += k
		}
		return n
	}
	b.evict = func() int64 {
		if len(kept) == 0 {
			return 0
		}
		n := kept[0]
		kept = kept[1:]
		return n
	}
	frees = 0
	g, err := b.reserve(ctx, 70*MiB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 2 || frees != 1 {
		t.Errorf("after reserving 70 MiB beside 190 MiB kept: %d kept, %d returns to the OS; want the oldest evicted (2 kept) and its memory returned", len(kept), frees)
	}
	frees = 0
	g.handOver() // lives on as a kept result: nothing to return
	if frees != 0 {
		t.Errorf("handOver returned memory to the OS")
	}
	var nilBudget *memBudget
	if g, err := nilBudget.reserve(ctx, 1<<40, 0); err != nil {
		t.Errorf("a nil budget: %v", err)
	} else {
		g.release()
	}
}

// vm returns a field of /proc/self/status in bytes.
func vm(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib << 10
		}
	}
	t.Skipf("no %s in /proc/self/status", field)
	return 0
}

// TestMemoryBudget: parallel requests with a photo that is small as a file
// and large decoded (3000² zeros with EXIF orientation 6: a 36 MB image,
// a 9 MB gray, in a 40 KB file) are held to the memory budget: the
// process's peak resident size (VmHWM, reset before) grows by no more than
// the budget and a margin, every request is answered (those that must
// wait for memory wait), and afterwards the memory goes back to the
// operating system within seconds.
func TestMemoryBudget(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	const (
		budget = 64 << 20
		margin = 32 << 20 // the runtime, the HTTP server and clients, the test's own garbage
	)
	s, ts := newTestServer(t, Options{Queue: 2, MaxPerClient: -1, MemoryBudget: budget})
	file := zerosPNG(3000, 3000, 6)
	grayBody, grayCT := form(t, file)
	colBody, colCT := form(t, file, "steps", "10", "samples", "1")
	if _, err := s.models.get(context.Background(), ""); err != nil { // loaded before the measurement
		t.Fatal(err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	before, anon := vm(t, "VmRSS"), vm(t, "RssAnon")
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
	var wg sync.WaitGroup
	statuses := make([]int, 7)
	for i := range statuses {
		wg.Go(func() {
			path, body, ct := "/api/gray", grayBody, grayCT
			if i%2 == 1 {
				path, body, ct = "/api/colorize", colBody, colCT
			}
			res, err := http.Post(ts.URL+path, ct, bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			statuses[i] = res.StatusCode
			if res.StatusCode != 200 || path == "/api/colorize" && !bytes.Contains(b, []byte("event: done")) {
				t.Errorf("%s: %d %.300s", path, res.StatusCode, b)
			}
		})
	}
	wg.Wait()
	peak := vm(t, "VmHWM")
	t.Logf("RSS before %d MiB, peak %d MiB (+%d MiB; budget %d MiB); statuses %v", before>>20, peak>>20, (peak-before)>>20, budget>>20, statuses)
	if peak-before > budget+margin {
		t.Errorf("the peak RSS grew by %d MiB, more than the budget of %d MiB and %d MiB besides", (peak-before)>>20, budget>>20, margin>>20)
	}
	// back: the kept results (their grays) stay, the rest goes back (the
	// anonymous memory: the code pages the requests touched stay mapped)
	_, kept := s.budget.inUse()
	var now int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if now = vm(t, "RssAnon"); now <= anon+kept+16<<20 {
			break
		}
	}
	t.Logf("anonymous RSS before %d MiB, after %d MiB, %d MiB of it kept results", anon>>20, now>>20, kept>>20)
	if now > anon+kept+16<<20 {
		t.Errorf("anonymous RSS %d MiB 5 s after the burst, more than the %d MiB before and %d MiB of kept results (+16)", now>>20, anon>>20, kept>>20)
	}
}

// TestOverBudget: a photo whose peak exceeds the whole memory budget is
// refused before anything is decoded (413, saying so); one that fits is
// taken.
func TestOverBudget(t *testing.T) {
	_, ts := newTestServer(t, Options{MemoryBudget: 16 << 20})
	body, ct := form(t, zerosPNG(2000, 2000, 1)) // 16 MB decoded + 4 MB gray
	res := post(t, context.Background(), ts.URL+"/api/gray", body, ct)
	if msg := apiErr(t, res); res.StatusCode != 413 || !strings.Contains(msg, "memory budget") {
		t.Errorf("2000² RGB in a 16 MiB budget: %d %q, want 413 about the memory budget", res.StatusCode, msg)
	}
	body, ct = form(t, zerosPNG(1000, 1000, 6))
	res = post(t, context.Background(), ts.URL+"/api/gray", body, ct)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("1000² RGB in a 16 MiB budget: %d %s", res.StatusCode, b)
	}
}

// TestIdleReturn: when the last request in flight ends after requests that
// allocated much, the memory goes back to the operating system a second
// later; after requests that allocated little, or while one is in flight,
// it does not.
func TestIdleReturn(t *testing.T) {
	var mu sync.Mutex
	frees := 0
	ir := &idleReturner{free: func() { mu.Lock(); frees++; mu.Unlock() }, allocs: heapAllocs()}
	count := func() int { mu.Lock(); defer mu.Unlock(); return frees }
	var sink []byte
	ir.begin()
	ir.begin()
	sink = make([]byte, 32<<20) // a request's garbage
	ir.end()
	time.Sleep(idleAfter + 300*time.Millisecond)
	if n := count(); n != 0 {
		t.Errorf("%d returns with a request in flight", n)
	}
	ir.end()
	time.Sleep(idleAfter + 300*time.Millisecond)
	if n := count(); n != 1 {
		t.Errorf("%d returns after the last request ended, want 1", n)
	}
	ir.begin()
	ir.end() // allocated little since
	time.Sleep(idleAfter + 300*time.Millisecond)
	if n := count(); n != 1 {
		t.Errorf("%d returns after a small request, want still 1", n)
	}
	_ = sink
}
