package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/track"
)

// tinySize is the image size of the tiny test network.
const tinySize = 16

// saveTiny saves a checkpoint of a tiny network (widths [4, 8], one block
// per level, 16² images) with random weights from seed into store.
func saveTiny(t testing.TB, store checkpoint.Store, name string, step int64, seed uint64) {
	t.Helper()
	net, err := model.New(model.Config{Widths: []int{4, 8}, BlockDepth: 1, EmbedDims: 32})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	net.Init(rng)
	for i := len(net.Params) - 15; i < len(net.Params); i++ { // the head (3×4 weights, 3 biases): non-zero output
		net.Params[i] = float32(0.5 * rng.NormFloat64())
	}
	cfg, err := config.Load("", []string{"image_size=16", "model.widths=[4,8]", "model.block_depth=1"})
	if err != nil {
		t.Fatal(err)
	}
	var ema bytes.Buffer
	if err := model.WriteSafetensors(&ema, net.StateDict(), nil); err != nil {
		t.Fatal(err)
	}
	err = store.Save(context.Background(), &checkpoint.Checkpoint{
		Name: name, Step: step, Epoch: int(step / 10),
		Parts: map[string][]byte{"ema.safetensors": ema.Bytes(), "config.yaml": cfg.YAML()},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tinyStore returns a directory store holding one tiny checkpoint,
// "epoch-000001".
func tinyStore(t testing.TB) (string, checkpoint.Store) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "checkpoints")
	store, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	saveTiny(t, store, "epoch-000001", 10, 1)
	return dir, store
}

// newTestServer starts a Server with a tiny store (unless opts.Store is
// set) on 127.0.0.1; it is closed when the test ends.
func newTestServer(t testing.TB, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	if opts.Store == "" {
		opts.Store, _ = tinyStore(t)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testLog{t}, nil))
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

// photo returns a w×h colour gradient.
func photo(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(255 * x / w), uint8(255 * y / h), uint8(128 + 64*((x/4+y/4)%2)), 255})
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// hugePNG returns a valid PNG header that declares w×h pixels (a
// decompression bomb's shape), followed by a 1×1 image's data.
func hugePNG(t testing.TB, w, h uint32) []byte {
	t.Helper()
	b := encodePNG(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	// signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), …, CRC after 13 data bytes
	be := func(off int, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	be(16, w)
	be(20, h)
	be(29, crc32.ChecksumIEEE(b[12:29]))
	return b
}

// form builds a multipart body: the file (if not nil) as "image" and the
// fields in order (name, value, name, value, …).
func form(t testing.TB, file []byte, fields ...string) (body []byte, contentType string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	if file != nil {
		fw, err := mw.CreateFormFile("image", "photo.png")
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(file)
	}
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

func post(t testing.TB, ctx context.Context, url string, body []byte, contentType string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// apiErr reads a JSON error answer.
func apiErr(t testing.TB, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error answer has Content-Type %q, want JSON", ct)
	}
	var e struct{ Error string }
	if err := json.NewDecoder(res.Body).Decode(&e); err != nil || e.Error == "" {
		t.Errorf("error answer: %v, %+v", err, e)
	}
	return e.Error
}

// sse reads a text/event-stream.
type sse struct{ sc *bufio.Scanner }

func newSSE(r io.Reader) *sse {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 8<<20)
	return &sse{sc: sc}
}

// next returns the next event and its data; ok is false at the end.
func (s *sse) next() (event string, data []byte, ok bool) {
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if event != "" || data != nil {
				return event, data, true
			}
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:]...)
		}
	}
	return "", nil, false
}

// decodeDataURL decodes a data:image/png;base64 URL.
func decodeDataURL(t testing.TB, u string) image.Image {
	t.Helper()
	b64, ok := strings.CutPrefix(u, "data:image/png;base64,")
	if !ok {
		t.Fatalf("not a PNG data URL: %.40q", u)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// fakeRun writes a run directory as tinct train does: config.yaml,
// metrics.jsonl (loss/step for steps 1…steps, loss/epoch, images_per_sec,
// one NaN loss) and a sample grid every epoch.
func fakeRun(t testing.TB, dir string, epochs, stepsPerEpoch int) {
	t.Helper()
	cfg, err := config.Load("", []string{"image_size=16", "model.widths=[4,8]", "model.block_depth=1", "epochs=20"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), cfg.YAML(), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := track.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	step := int64(0)
	for e := 1; e <= epochs; e++ {
		sum := 0.0
		for range stepsPerEpoch {
			step++
			v := 0.9/float64(step) + 0.02
			sum += v
			w.Scalar("loss/step", step, v)
			w.Scalar("images_per_sec", step, 40+float64(e))
		}
		w.Scalar("loss/epoch", int64(e), sum/float64(stepsPerEpoch))
		grid := track.Grid([][]image.Image{{photo(16, 16), photo(16, 16)}, {photo(16, 16), photo(16, 16)}}, 2)
		if err := w.Image("samples", int64(e), grid); err != nil {
			t.Fatal(err)
		}
	}
	w.Scalar("loss/step", step+1, math.NaN())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A record cut short by a crash: skipped.
	f, err := os.OpenFile(filepath.Join(dir, "metrics.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-01-01T00:00:00Z","tag":"loss/st`)
	f.Close()
}

// waitFor returns the value from ch or fails after a generous deadline (a
// hung server must not hang the test run).
func waitFor[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// testLog writes the server's log to the test's.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
