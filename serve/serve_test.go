package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinct/tinct/config"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/chroma"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/track"
	"github.com/tinct/tinct/trainstate"
)

func getJSON(t *testing.T, url string, status int, v any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != status {
		t.Fatalf("GET %s: %d, want %d: %s", url, res.StatusCode, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}

func TestPageAndAssets(t *testing.T) {
	_, ts := newTestServer(t, Options{})
	for _, c := range []struct {
		path, ctype, contains string
		status                int
	}{
		{"/", "text/html", `<input type="file" id="image"`, 200},
		{"/static/app.js", "text/javascript", "readEvents", 200},
		{"/static/style.css", "text/css", "@media", 200},
		{"/static/nope.js", "", "", 404},
		{"/static/", "", "", 404},
		{"/nope", "", "", 404},
	} {
		res, err := http.Get(ts.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.status {
			t.Errorf("GET %s: %d, want %d", c.path, res.StatusCode, c.status)
			continue
		}
		if !strings.HasPrefix(res.Header.Get("Content-Type"), c.ctype) || !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: Content-Type %q, body without %q", c.path, res.Header.Get("Content-Type"), c.contains)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
		}
	}
	// Every control of the page has a label.
	res, _ := http.Get(ts.URL + "/")
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, id := range []string{"image", "checkpoint", "steps", "samples", "grid-epoch"} {
		if !strings.Contains(string(page), fmt.Sprintf(`<label for="%s"`, id)) {
			t.Errorf("control #%s has no <label for>", id)
		}
	}
	// Unknown API paths and wrong methods answer JSON errors.
	res, _ = http.Get(ts.URL + "/api/nope")
	if res.StatusCode != 404 || !strings.Contains(apiErr(t, res), "/api/nope") {
		t.Errorf("GET /api/nope: %d", res.StatusCode)
	}
	res, _ = http.Get(ts.URL + "/api/colorize")
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/colorize: %d, want 405", res.StatusCode)
	}
}

func TestCheckpoints(t *testing.T) {
	dir, store := tinyStore(t)
	saveTiny(t, store, "epoch-000002", 20, 2)
	_, ts := newTestServer(t, Options{Store: dir})
	var got struct {
		Store       string
		Default     string
		Checkpoints []checkpointInfo
	}
	getJSON(t, ts.URL+"/api/checkpoints", 200, &got)
	if got.Default != "epoch-000002" || len(got.Checkpoints) != 2 || got.Checkpoints[1].Name != "epoch-000001" ||
		got.Checkpoints[0].Epoch != 2 || got.Checkpoints[0].Step != 20 || got.Checkpoints[0].Bytes == 0 || got.Store != "checkpoints" {
		t.Errorf("checkpoints: %+v", got)
	}

	_, empty := newTestServer(t, Options{Store: t.TempDir()})
	getJSON(t, empty.URL+"/api/checkpoints", 200, &got)
	if got.Default != "" || len(got.Checkpoints) != 0 {
		t.Errorf("empty store: %+v", got)
	}
	body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
	res := post(t, context.Background(), empty.URL+"/api/colorize", body, ct)
	if msg := apiErr(t, res); res.StatusCode != 404 || !strings.Contains(msg, "no checkpoint") {
		t.Errorf("colorize with an empty store: %d %q", res.StatusCode, msg)
	}

	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	noStore := httptest.NewServer(s)
	defer noStore.Close()
	res, _ = http.Get(noStore.URL + "/api/checkpoints")
	if msg := apiErr(t, res); res.StatusCode != 503 || !strings.Contains(msg, "--store") {
		t.Errorf("no store: %d %q", res.StatusCode, msg)
	}
}

// TestFallbackModel: a fallback model (tinct serve's bundled demo) is
// listed after the store's checkpoints, marked bundled, colorizes when
// named, and is the default while the store is empty or absent.
func TestFallbackModel(t *testing.T) {
	fbStore, err := checkpoint.Open(filepath.Join(t.TempDir(), "fb"))
	if err != nil {
		t.Fatal(err)
	}
	saveTiny(t, fbStore, "fb", 7, 9)
	fb, _, err := trainstate.LoadNetwork(context.Background(), fbStore, "fb", trainstate.PartEMA)
	if err != nil {
		t.Fatal(err)
	}
	fb.Name = "demo"
	var got struct {
		Default     string
		Checkpoints []checkpointInfo
	}
	colorize := func(url string, fields ...string) (int, string) {
		body, ct := form(t, encodePNG(t, photo(20, 20)), append([]string{"steps", "10", "samples", "1"}, fields...)...)
		res := post(t, context.Background(), url+"/api/colorize", body, ct)
		defer res.Body.Close()
		if res.StatusCode != 200 {
			return res.StatusCode, apiErr(t, res)
		}
		st := readStream(t, res)
		if st.start == nil {
			return 200, ""
		}
		return 200, st.start.Checkpoint
	}

	_, full := newTestServer(t, Options{Fallback: fb})
	getJSON(t, full.URL+"/api/checkpoints", 200, &got)
	if got.Default != "epoch-000001" || len(got.Checkpoints) != 2 || got.Checkpoints[1].Name != "demo" || !got.Checkpoints[1].Bundled || got.Checkpoints[0].Bundled {
		t.Errorf("store and fallback: %+v", got)
	}
	if code, name := colorize(full.URL, "checkpoint", "demo"); code != 200 || name != "demo" {
		t.Errorf("colorize with the fallback by name: %d %q", code, name)
	}
	if code, name := colorize(full.URL); code != 200 || name != "epoch-000001" {
		t.Errorf("colorize by default with a checkpoint in the store: %d %q, want the store's", code, name)
	}

	_, empty := newTestServer(t, Options{Store: t.TempDir(), Fallback: fb})
	getJSON(t, empty.URL+"/api/checkpoints", 200, &got)
	if got.Default != "demo" || len(got.Checkpoints) != 1 {
		t.Errorf("empty store and fallback: %+v", got)
	}
	if code, name := colorize(empty.URL); code != 200 || name != "demo" {
		t.Errorf("colorize with an empty store: %d %q, want the fallback", code, name)
	}

	s, err := New(Options{Fallback: fb})
	if err != nil {
		t.Fatal(err)
	}
	none := httptest.NewServer(s)
	defer none.Close()
	getJSON(t, none.URL+"/api/checkpoints", 200, &got)
	if got.Default != "demo" || len(got.Checkpoints) != 1 {
		t.Errorf("no store, fallback: %+v", got)
	}
	if code, name := colorize(none.URL); code != 200 || name != "demo" {
		t.Errorf("colorize with no store: %d %q, want the fallback", code, name)
	}
}

func TestLimits(t *testing.T) {
	_, ts := newTestServer(t, Options{Queue: 3, MaxUploadBytes: 1000})
	var got struct {
		MaxUploadBytes int64 `json:"max_upload_bytes"`
		MaxPixels      int64 `json:"max_pixels"`
		Steps, Samples [2]int
		Queue          int
	}
	getJSON(t, ts.URL+"/api/limits", 200, &got)
	if got.MaxUploadBytes != 1000 || got.MaxPixels != DefaultMaxPixels || got.Steps != [2]int{10, 100} || got.Samples != [2]int{1, 8} || got.Queue != 3 {
		t.Errorf("limits: %+v", got)
	}
}

// grayOf is the network input tinct serve computes for img: BT.601 gray as
// training's pipeline, the whole frame fitted into size² (chroma.Fit).
func grayOf(img image.Image, size int) *image.Gray {
	g, _ := chroma.Fit(dataset.ToGray(img), size)
	return g
}

func TestGray(t *testing.T) {
	_, ts := newTestServer(t, Options{})
	src := photo(48, 32)
	for _, enc := range []string{"png", "jpeg"} {
		var b bytes.Buffer
		if enc == "png" {
			png.Encode(&b, src)
		} else {
			jpeg.Encode(&b, src, &jpeg.Options{Quality: 90})
		}
		decoded, _, _ := image.Decode(bytes.NewReader(b.Bytes()))
		body, ct := form(t, b.Bytes())
		res := post(t, context.Background(), ts.URL+"/api/gray", body, ct)
		var got grayResult
		if err := json.NewDecoder(res.Body).Decode(&got); err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %d %v", enc, res.StatusCode, err)
		}
		res.Body.Close()
		img := decodeDataURL(t, got.Gray)
		want := grayOf(decoded, tinySize)
		g, ok := img.(*image.Gray)
		if !ok || got.ImageSize != tinySize || got.Checkpoint != "epoch-000001" || !bytes.Equal(g.Pix, want.Pix) {
			t.Errorf("%s: gray %T %v (checkpoint %q, size %d) differs from the training pipeline's", enc, img, img.Bounds(), got.Checkpoint, got.ImageSize)
		}
		if got.Width != 48 || got.Height != 32 || got.Frame != [4]int{0, 2, 16, 13} {
			t.Errorf("%s: photo %d×%d, frame %v; want 48×32 in [0 2 16 13] (11 rows: 32·16/48 rounded)", enc, got.Width, got.Height, got.Frame)
		}
	}
}

type streamed struct {
	queued   []queuedEvent
	start    *startEvent
	progress []progressEvent
	previews []previewEvent
	done     *doneEvent
	err      *errorEvent
	order    []string
}

// readStream reads a colorization's event stream to its end.
func readStream(t *testing.T, res *http.Response) streamed {
	t.Helper()
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("colorize: %d %s: %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	var s streamed
	ev := newSSE(res.Body)
	for {
		name, data, ok := ev.next()
		if !ok {
			return s
		}
		s.order = append(s.order, name)
		var err error
		switch name {
		case "queued":
			var q queuedEvent
			err = json.Unmarshal(data, &q)
			s.queued = append(s.queued, q)
		case "start":
			s.start = new(startEvent)
			err = json.Unmarshal(data, s.start)
		case "progress":
			var p progressEvent
			err = json.Unmarshal(data, &p)
			s.progress = append(s.progress, p)
		case "preview":
			var p previewEvent
			err = json.Unmarshal(data, &p)
			s.previews = append(s.previews, p)
		case "done":
			s.done = new(doneEvent)
			err = json.Unmarshal(data, s.done)
		case "error":
			s.err = new(errorEvent)
			err = json.Unmarshal(data, s.err)
		default:
			t.Errorf("unknown event %q", name)
		}
		if err != nil {
			t.Fatalf("event %s: %v: %s", name, err, data)
		}
	}
}

func TestColorize(t *testing.T) {
	dir, store := tinyStore(t)
	_, ts := newTestServer(t, Options{Store: dir})
	src := photo(40, 30)
	file := encodePNG(t, src)
	const steps, samples, seed = 10, 2, 12345678901234567890
	body, ct := form(t, file, "steps", fmt.Sprint(steps), "samples", fmt.Sprint(samples), "seed", fmt.Sprint(uint64(seed)))
	s := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if s.err != nil || s.done == nil || s.start == nil {
		t.Fatalf("events %v, error %+v", s.order, s.err)
	}
	if s.order[0] != "start" || len(s.progress) != steps || s.order[len(s.order)-1] != "done" {
		t.Errorf("events %v", s.order)
	}
	for i, p := range s.progress {
		if p.Step != i+1 || p.Steps != steps {
			t.Errorf("progress %d: %+v", i, p)
		}
	}
	// 10 steps: a preview after each step but the last, each a PNG of the model's size
	if len(s.previews) != steps-1 {
		t.Errorf("%d previews, want %d", len(s.previews), steps-1)
	}
	for _, p := range s.previews {
		if img := decodeDataURL(t, p.Image); img.Bounds().Dx() != tinySize {
			t.Errorf("preview of step %d is %v", p.Step, img.Bounds())
		}
	}
	if s.start.Checkpoint != "epoch-000001" || s.start.Steps != steps || s.start.Samples != samples || s.start.Seed != seed || s.start.ImageSize != tinySize {
		t.Errorf("start: %+v", s.start)
	}
	if len(s.done.Images) != samples {
		t.Fatalf("%d images, want %d", len(s.done.Images), samples)
	}

	// The images are what the checkpoint's EMA network gives for this
	// seed, from the training pipeline's gray image.
	m, _, err := trainstate.LoadNetwork(context.Background(), store, "", trainstate.PartEMA)
	if err != nil {
		t.Fatal(err)
	}
	g := grayOf(src, tinySize)
	gray := make([]float32, tinySize*tinySize)
	for i, v := range g.Pix {
		gray[i] = float32(v)/127.5 - 1
	}
	sm, err := model.NewSampler(m.Net, samples, tinySize, tinySize)
	if err != nil {
		t.Fatal(err)
	}
	out, err := sm.Colorize(context.Background(), nn.TensorFrom(gray, 1, 1, tinySize, tinySize), samples, steps, rand.New(rand.NewPCG(seed, 0)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, u := range s.done.Images {
		got := decodeDataURL(t, u)
		// the model-size sample is the photo's frame: 16×12 of the 16² square for 40×30
		want := track.ToImage(out.Image(k), 3, tinySize, tinySize).(*image.RGBA).SubImage(image.Rect(0, 2, 16, 14)).(*image.RGBA)
		want.Rect = want.Rect.Sub(want.Rect.Min)
		if got.Bounds() != want.Bounds() {
			t.Fatalf("image %d: %v, want %v", k, got.Bounds(), want.Bounds())
		}
		for y := range 12 {
			for x := range tinySize {
				r1, g1, b1, _ := got.At(x, y).RGBA()
				r2, g2, b2, _ := want.At(x, y).RGBA()
				if r1 != r2 || g1 != g2 || b1 != b2 {
					t.Fatalf("image %d differs from a direct colorization at (%d,%d)", k, x, y)
				}
			}
		}
	}
	if decodeDataURL(t, s.done.Images[0]) == nil || s.done.Images[0] == s.done.Images[1] {
		t.Error("the two samples are identical")
	}

	// The same request again: the same colours (cached sampler, same seed).
	again := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if again.done == nil || again.done.Images[0] != s.done.Images[0] || again.done.Images[1] != s.done.Images[1] {
		t.Error("the same seed gave different colours")
	}
	// No seed: a random one, reported.
	body, ct = form(t, file, "steps", "10", "samples", "1", "checkpoint", "epoch-000001")
	r := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if r.done == nil || len(r.done.Images) != 1 || r.start.Seed == seed {
		t.Errorf("random seed: %+v %+v", r.start, r.done)
	}
}

func TestColorizeBadInput(t *testing.T) {
	_, ts := newTestServer(t, Options{MaxUploadBytes: 256 << 10, MaxPixels: 1 << 20})
	good := encodePNG(t, photo(40, 30))
	noise := image.NewRGBA(image.Rect(0, 0, 200, 200))
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range noise.Pix {
		noise.Pix[i] = uint8(rng.Uint32())
	}
	bigPNG := encodePNG(t, noise)
	var jb bytes.Buffer
	jpeg.Encode(&jb, photo(200, 200), &jpeg.Options{Quality: 95})
	var gb bytes.Buffer
	gif.Encode(&gb, photo(20, 20), nil)
	huge := make([]byte, 300<<10)
	copy(huge, good)
	ok := []string{"steps", "10", "samples", "2"}
	with := func(kv ...string) []string {
		out := append([]string(nil), ok...)
		for i := 0; i < len(kv); i += 2 {
			for j := 0; j < len(out); j += 2 {
				if out[j] == kv[i] {
					out[j+1] = kv[i+1]
				}
			}
			if !strings.Contains(strings.Join(out, "\x00"), kv[i]) {
				out = append(out, kv[i], kv[i+1])
			}
		}
		return out
	}
	without := func(key string) []string {
		var out []string
		for i := 0; i < len(ok); i += 2 {
			if ok[i] != key {
				out = append(out, ok[i], ok[i+1])
			}
		}
		return out
	}
	cases := []struct {
		name   string
		file   []byte
		fields []string
		status int
		msg    string
	}{
		{"not an image", []byte("hello, I am a text file\n"), ok, 415, "not a PNG or JPEG"},
		{"a GIF", gb.Bytes(), ok, 415, "GIF images are not supported"},
		{"truncated PNG", bigPNG[:len(bigPNG)/2], ok, 400, "damaged or truncated"},
		{"truncated JPEG", jb.Bytes()[:jb.Len()/3], ok, 400, "damaged or truncated"},
		{"bytes over the limit", huge, ok, 413, "larger than 256 KiB"},
		{"pixels over the limit", hugePNG(t, 30000, 30000), ok, 413, "30000×30000"},
		{"a decompression bomb", hugePNG(t, 1<<20, 1<<20), ok, 413, "megapixels"},
		{"no image", nil, ok, 400, "no photo"},
		{"an empty image", []byte{}, ok, 400, "empty file"},
		{"steps missing", good, without("steps"), 400, "steps: missing"},
		{"steps below the range", good, with("steps", "5"), 400, "steps 5: out of range; give 10 to 100"},
		{"steps above the range", good, with("steps", "110"), 400, "steps 110: out of range"},
		{"steps not a number", good, with("steps", "ten"), 400, `steps "ten": not a whole number`},
		{"samples missing", good, without("samples"), 400, "samples: missing"},
		{"samples 0", good, with("samples", "0"), 400, "samples 0: out of range; give 1 to 8"},
		{"samples 9", good, with("samples", "9"), 400, "samples 9: out of range"},
		{"bad seed", good, with("seed", "-1"), 400, "seed"},
		{"unknown checkpoint", good, with("checkpoint", "epoch-999999"), 404, `"epoch-999999" is not in`},
		{"checkpoint name with a path", good, with("checkpoint", "../x"), 400, "invalid checkpoint name"},
		{"long field", good, with("checkpoint", strings.Repeat("x", 2000)), 400, "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, endpoint := range []string{"/api/colorize", "/api/gray"} {
				if endpoint == "/api/gray" && (strings.Contains(c.name, "steps") || strings.Contains(c.name, "samples") || strings.Contains(c.name, "seed")) {
					continue // /api/gray takes no such fields
				}
				body, ct := form(t, c.file, c.fields...)
				res := post(t, context.Background(), ts.URL+endpoint, body, ct)
				msg := apiErr(t, res)
				if res.StatusCode != c.status || !strings.Contains(msg, c.msg) {
					t.Errorf("%s: %d %q, want %d with %q", endpoint, res.StatusCode, msg, c.status, c.msg)
				}
			}
		})
	}

	// A body over the limit without a Content-Length (chunked): the
	// MaxBytesReader stops it.
	body, ct := form(t, huge, ok...)
	req, _ := http.NewRequest("POST", ts.URL+"/api/colorize", io.MultiReader(bytes.NewReader(body)))
	req.Header.Set("Content-Type", ct)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if msg := apiErr(t, res); res.StatusCode != 413 || !strings.Contains(msg, "larger than") {
		t.Errorf("chunked oversized body: %d %q", res.StatusCode, msg)
	}
	// Not multipart.
	res = post(t, context.Background(), ts.URL+"/api/colorize", []byte(`{"steps":10}`), "application/json")
	if msg := apiErr(t, res); res.StatusCode != 415 || !strings.Contains(msg, "multipart/form-data") {
		t.Errorf("JSON body: %d %q", res.StatusCode, msg)
	}
	// A malformed multipart body.
	res = post(t, context.Background(), ts.URL+"/api/colorize", []byte("--x\r\ngarbage"), "multipart/form-data; boundary=x")
	if res.StatusCode != 400 {
		t.Errorf("malformed multipart: %d", res.StatusCode)
	}
	apiErr(t, res)

	// And the server still works.
	body, ct = form(t, good, ok...)
	if s := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct)); s.done == nil || len(s.done.Images) != 2 {
		t.Errorf("after bad requests: %v", s.order)
	}
}

// TestColorizeBusy fills the queue (1 running + 1 waiting): the next request
// gets 503 at once (here, without waiting for a place, AdmitWait < 0, and
// without a limit per client: all come from 127.0.0.1), and the two
// admitted ones finish in order. TestFairAdmission tests the wait.
func TestColorizeBusy(t *testing.T) {
	s, ts := newTestServer(t, Options{Queue: 1, AdmitWait: -1, MaxPerClient: -1})
	started := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	s.progress = func(ctx context.Context, step, steps int) {
		if calls.Add(1) == 1 { // the first request's first step: hold the run slot
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
	first := make(chan streamed, 1)
	go func() { first <- readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct)) }()
	waitFor(t, started, "the first colorization to start")

	second := post(t, context.Background(), ts.URL+"/api/colorize", body, ct)
	ev := newSSE(second.Body)
	name, data, _ := ev.next()
	if name != "queued" {
		t.Fatalf("second request: first event %q %s, want queued", name, data)
	}

	third := post(t, context.Background(), ts.URL+"/api/colorize", body, ct)
	if msg := apiErr(t, third); third.StatusCode != 503 || !strings.Contains(msg, "busy") || third.Header.Get("Retry-After") == "" {
		t.Errorf("third request: %d %q, Retry-After %q", third.StatusCode, msg, third.Header.Get("Retry-After"))
	}
	// a full server refuses before reading the upload: even a body that is
	// not a form gets 503, not 400, so waiting uploads are bounded too
	junk := post(t, context.Background(), ts.URL+"/api/colorize", []byte("not a form"), ct)
	if msg := apiErr(t, junk); junk.StatusCode != 503 {
		t.Errorf("unreadable upload to a full server: %d %q, want 503", junk.StatusCode, msg)
	}

	close(release)
	if f := waitFor(t, first, "the first colorization"); f.done == nil {
		t.Errorf("first: %v", f.order)
	}
	var rest []string
	for {
		name, _, ok := ev.next()
		if !ok {
			break
		}
		rest = append(rest, name)
	}
	second.Body.Close()
	if len(rest) == 0 || rest[0] != "start" || rest[len(rest)-1] != "done" {
		t.Errorf("second request after queued: %v", rest)
	}
}

// TestColorizeCancel: a client that goes away stops its colorization at the
// next step and frees the run slot.
func TestColorizeCancel(t *testing.T) {
	s, ts := newTestServer(t, Options{})
	started := make(chan struct{})
	var once atomic.Bool
	s.progress = func(ctx context.Context, step, steps int) {
		if once.CompareAndSwap(false, true) {
			close(started)
			<-ctx.Done() // until the client goes away
		}
	}
	finished := make(chan error, 4)
	s.finished = func(err error) { finished <- err }

	body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "100", "samples", "1")
	ctx, cancel := context.WithCancel(context.Background())
	res := post(t, ctx, ts.URL+"/api/colorize", body, ct)
	waitFor(t, started, "the colorization to start")
	cancel()
	res.Body.Close()
	if err := waitFor(t, finished, "the cancelled colorization to end"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled colorization ended with %v, want context.Canceled", err)
	}
	r := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if r.done == nil || len(r.queued) != 0 {
		t.Errorf("after a cancel: %v", r.order)
	}
	if err := waitFor(t, finished, "the second colorization"); err != nil {
		t.Error(err)
	}
}

func TestModelCache(t *testing.T) {
	dir, store := tinyStore(t)
	s, err := New(Options{Store: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := s.models.get(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := s.models.get(ctx, "epoch-000001"); b != a {
		t.Error("the newest checkpoint was loaded twice")
	}
	s1, _ := s.models.pipeline(a, 2)
	if s2, _ := s.models.pipeline(a, 2); s2 != s1 || s1 == nil {
		t.Error("the pipeline for (checkpoint, 2 samples) was not reused")
	}
	saveTiny(t, store, "epoch-000002", 20, 2)
	if c, _ := s.models.get(ctx, ""); c == nil || c.Name != "epoch-000002" || c.Epoch != 2 {
		t.Errorf("after a new checkpoint the default is %+v", c)
	}
	// A checkpoint saved again under the same name is loaded again.
	saveTiny(t, store, "epoch-000001", 10, 3)
	if d, _ := s.models.get(ctx, "epoch-000001"); d == a {
		t.Error("a replaced checkpoint was served from the cache")
	}
	for _, n := range []int{1, 2, 3, 8, 1, 4, 2} {
		m, _ := s.models.get(ctx, "")
		s.models.pipeline(m, n)
	}
	var cached []int
	for e := s.models.pipes.Front(); e != nil; e = e.Next() {
		cached = append(cached, e.Value.(*cachedPipeline).samples)
	}
	if fmt.Sprint(cached) != "[2 4 1]" || s.models.nets.Len() > maxCachedNets {
		t.Errorf("cached pipelines for %v samples, %d nets", cached, s.models.nets.Len())
	}

	// A damaged newest checkpoint: the previous valid one is used.
	os.WriteFile(filepath.Join(dir, "epoch-000002", "ema.safetensors"), []byte("garbage"), 0o644)
	s, _ = New(Options{Store: dir})
	if m, err := s.models.get(ctx, ""); err != nil || m.Name != "epoch-000001" {
		t.Errorf("damaged newest: %v, %v", m, err)
	}
	// A checkpoint without the parts the network needs.
	store.Save(ctx, &checkpoint.Checkpoint{Name: "epoch-000003", Step: 30, Parts: map[string][]byte{"weights.safetensors": []byte("x")}})
	if _, err := s.models.get(ctx, "epoch-000003"); err == nil || !strings.Contains(err.Error(), "epoch-000003 is damaged") {
		t.Errorf("checkpoint without config.yaml: %v", err)
	}
}

func TestRun(t *testing.T) {
	outputs := t.TempDir()
	older := filepath.Join(outputs, "2026-01-01_00-00-00")
	newer := filepath.Join(outputs, "2026-01-02_00-00-00")
	fakeRun(t, older, 1, 3)
	fakeRun(t, newer, 4, 5)
	past := time.Now().Add(-time.Hour)
	os.Chtimes(track.MetricsPath(older), past, past)
	os.MkdirAll(filepath.Join(outputs, "prepared", "x"), 0o755) // not a run

	_, ts := newTestServer(t, Options{OutputsDir: outputs})
	var got runData
	getJSON(t, ts.URL+"/api/run", 200, &got)
	if got.Name != filepath.Base(newer) || got.Config == nil || got.Config.Epochs != 20 || got.Config.ImageSize != 16 {
		t.Fatalf("run: %+v", got)
	}
	if len(got.LossStep) != 20 || got.LossStep[0] != (point{1, 0.92}) || got.Bucket != 1 {
		t.Errorf("loss/step: %v (bucket %d)", got.LossStep, got.Bucket)
	}
	if len(got.LossEpoch) != 4 || got.LossEpoch[3][0] != 4 || got.NonFinite != 1 || got.ImagesPerSec != 44 {
		t.Errorf("loss/epoch %v, non-finite %d, images/s %v", got.LossEpoch, got.NonFinite, got.ImagesPerSec)
	}
	if len(got.Samples) != 4 || got.Samples[3] != (grid{Epoch: 4, URL: "/run/images/samples-00000004.png"}) {
		t.Fatalf("samples: %+v", got.Samples)
	}
	res, err := http.Get(ts.URL + got.Samples[3].URL)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(res.Body)
	res.Body.Close()
	if err != nil || res.Header.Get("Content-Type") != "image/png" || img.Bounds().Dx() != 34 {
		t.Errorf("grid: %v %q %v", err, res.Header.Get("Content-Type"), img)
	}

	// --run wins over --outputs.
	_, ts2 := newTestServer(t, Options{RunDir: older, OutputsDir: outputs})
	getJSON(t, ts2.URL+"/api/run", 200, &got)
	if got.Name != filepath.Base(older) || len(got.Samples) != 1 {
		t.Errorf("--run: %+v", got)
	}
	// No run yet: not an error (the page would log a failed request at
	// each refresh), but an empty run with a message that says how to
	// start one.
	for _, o := range []Options{{OutputsDir: t.TempDir()}, {OutputsDir: filepath.Join(t.TempDir(), "missing")}, {}} {
		_, ts3 := newTestServer(t, o)
		var none runData
		getJSON(t, ts3.URL+"/api/run", 200, &none)
		if none.Dir != "" || len(none.LossStep) != 0 || !strings.Contains(none.Message, "tinct train") && !strings.Contains(none.Message, "--run DIR") {
			t.Errorf("%+v: %+v", o, none)
		}
	}
	// A --run naming a folder that is not there: a 404 that says so.
	_, ts4 := newTestServer(t, Options{RunDir: filepath.Join(t.TempDir(), "missing")})
	res, _ = http.Get(ts4.URL + "/api/run")
	if msg := apiErr(t, res); res.StatusCode != 404 || !strings.Contains(msg, "--run") {
		t.Errorf("--run missing: %d %q", res.StatusCode, msg)
	}
}

// TestRunConfigDefaults: a run's config.yaml is read as tinct reads it
// (config.Parse), so that keys it leaves out show their defaults (they
// showed as 0) and a file tinct would refuse shows no configuration.
func TestRunConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("epochs: 3\n"), 0o644)
	got, err := readRun(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	def, _ := config.Parse(nil, nil)
	if c := got.Config; c == nil || c.Epochs != 3 || c.ImageSize != def.ImageSize || c.BatchSize != def.BatchSize || len(c.Widths) == 0 {
		t.Errorf("config %+v, want epochs 3 and the defaults", c)
	}
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("epochs: -3\n"), 0o644)
	if got, err = readRun(context.Background(), dir); err != nil || got.Config != nil {
		t.Errorf("an invalid config.yaml: %+v, %v", got.Config, err)
	}
}

func TestRunDownsampled(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	const n = 5000
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `{"time":"2026-01-01T00:00:00Z","tag":"loss/step","step":%d,"value":%d}`+"\n", i, i)
	}
	// A resumed run repeats steps: the last value counts.
	fmt.Fprintf(&b, `{"time":"2026-01-01T00:00:01Z","tag":"loss/step","step":1,"value":3}`+"\n")
	os.WriteFile(track.MetricsPath(dir), b.Bytes(), 0o644)
	got, err := readRun(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Bucket != 3 || len(got.LossStep) != 1667 || got.LossStep[0] != (point{3, 8.0 / 3}) || got.LossStep[1666] != (point{5000, 9999.0 / 2}) {
		t.Errorf("bucket %d, %d points, first %v, last %v", got.Bucket, len(got.LossStep), got.LossStep[0], got.LossStep[len(got.LossStep)-1])
	}
}

// TestNoPathTraversal: only the embedded assets and the PNGs of the run's
// images/ folder are served.
func TestNoPathTraversal(t *testing.T) {
	outputs := t.TempDir()
	run := filepath.Join(outputs, "run")
	fakeRun(t, run, 1, 2)
	secret := "TOP-SECRET-CONTENT"
	os.WriteFile(filepath.Join(run, "secret.png"), []byte(secret), 0o644)
	os.WriteFile(filepath.Join(outputs, "secret.png"), []byte(secret), 0o644)
	os.WriteFile(filepath.Join(run, "images", "notes.txt"), []byte(secret), 0o644)
	if err := os.Symlink(filepath.Join(run, "secret.png"), filepath.Join(run, "images", "link.png")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(run, "images", "dir.png"), 0o755)
	_, ts := newTestServer(t, Options{RunDir: run})

	for _, p := range []string{
		"/run/images/../secret.png",
		"/run/images/..%2fsecret.png",
		"/run/images/%2e%2e%2fsecret.png",
		"/run/images/..%2f..%2fsecret.png",
		"/run/images/%2e%2e/secret.png",
		"/run/images/..\\secret.png",
		"/run/images/link.png",
		"/run/images/notes.txt",
		"/run/images/dir.png",
		"/run/images/.hidden.png",
		"/run/images/",
		"/run/secret.png",
		"/run/images/%2fetc%2fpasswd",
		"/static/../serve.go",
		"/static/..%2fserver.go",
		"/static/%2e%2e%2fserver.go",
		"/static/index.html/../../go.mod",
		"/../go.mod",
	} {
		req, _ := http.NewRequest("GET", ts.URL+"/", nil)
		req.URL.Opaque = p // sent as written, not cleaned by the client
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if strings.Contains(string(body), secret) || strings.Contains(string(body), "package serve") || strings.Contains(string(body), "module github.com") {
			t.Errorf("GET %s: %d served a file outside the app", p, res.StatusCode)
		}
		if res.StatusCode == 200 && !strings.Contains(string(body), "<!doctype html>") {
			t.Errorf("GET %s: 200", p)
		}
	}
	// A real grid is served.
	res, _ := http.Get(ts.URL + "/run/images/samples-00000001.png")
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("grid: %d", res.StatusCode)
	}
}

type fakeCluster struct{}

func (fakeCluster) ClusterStatus(context.Context) (ClusterStatus, error) {
	return ClusterStatus{Attached: true, Message: "training", Coordinator: "10.0.0.1:7000", Epoch: 3, Step: 120,
		Workers: []WorkerStatus{{ID: "w1", Addr: "10.0.0.2:7001", Rank: 0, State: "training", ImagesPerSec: 80}}}, nil
}

func TestCluster(t *testing.T) {
	_, ts := newTestServer(t, Options{})
	var got ClusterStatus
	getJSON(t, ts.URL+"/api/cluster", 200, &got)
	if got.Attached || got.Message != "not attached to a coordinator" || got.Workers == nil {
		t.Errorf("no cluster: %+v", got)
	}
	_, ts = newTestServer(t, Options{Cluster: fakeCluster{}})
	getJSON(t, ts.URL+"/api/cluster", 200, &got)
	if !got.Attached || got.Coordinator != "10.0.0.1:7000" || len(got.Workers) != 1 || got.Workers[0].ImagesPerSec != 80 {
		t.Errorf("cluster: %+v", got)
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(Options{Queue: -1}); err == nil {
		t.Error("negative queue accepted")
	}
	if _, err := New(Options{Store: "ftp://host/x"}); err == nil || !strings.Contains(err.Error(), "ftp") {
		t.Errorf("ftp store: %v", err)
	}
}

// exifPNG returns img as a PNG with an eXIf chunk holding the orientation.
func exifPNG(t testing.TB, img image.Image, orientation uint16) []byte {
	t.Helper()
	data := encodePNG(t, img)
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, byte(orientation >> 8), byte(orientation), 0, 0, 0, 0, 0, 0}
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(tiff)))
	chunk = append(chunk, "eXIf"...)
	chunk = append(chunk, tiff...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	const ihdrEnd = 8 + 8 + 13 + 4
	return append(append(append([]byte(nil), data[:ihdrEnd]...), chunk...), data[ihdrEnd:]...)
}

// TestGrayOrientation: a portrait photo stored sideways with an EXIF
// orientation is seen upright, as the browser shows it.
func TestGrayOrientation(t *testing.T) {
	_, ts := newTestServer(t, Options{})
	upright := photo(30, 48)
	gray := func(file []byte) []byte {
		body, ct := form(t, file)
		res := post(t, context.Background(), ts.URL+"/api/gray", body, ct)
		var got grayResult
		if err := json.NewDecoder(res.Body).Decode(&got); err != nil || res.StatusCode != 200 {
			t.Fatalf("%d %v", res.StatusCode, err)
		}
		res.Body.Close()
		return decodeDataURL(t, got.Gray).(*image.Gray).Pix
	}
	want := gray(encodePNG(t, upright))
	if got := gray(exifPNG(t, dataset.Orient(upright, 8), 6)); !bytes.Equal(got, want) {
		t.Error("a photo stored sideways with orientation 6 is not seen upright")
	}
	if got := gray(exifPNG(t, dataset.Orient(upright, 3), 3)); !bytes.Equal(got, want) {
		t.Error("a photo stored upside down with orientation 3 is not seen upright")
	}
}

// TestQueuePositions: waiting requests are told how many colorizations are
// before them, and told again whenever that changes: when one ahead gives
// up, and when the running one finishes.
func TestQueuePositions(t *testing.T) {
	// every request comes from 127.0.0.1: no limit per client here
	s, ts := newTestServer(t, Options{Queue: 3, MaxPerClient: -1})
	started := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	all, cancelAll := context.WithCancel(context.Background())
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }); cancelAll() }) // before the server closes
	var calls atomic.Int32
	s.progress = func(ctx context.Context, step, steps int) {
		if calls.Add(1) == 1 {
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
	type event struct {
		name string
		data []byte
	}
	// open sends a colorization and streams its events into a channel.
	open := func(ctx context.Context) <-chan event {
		ch := make(chan event, 64)
		go func() {
			defer close(ch)
			req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/api/colorize", bytes.NewReader(body))
			req.Header.Set("Content-Type", ct)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer res.Body.Close()
			ev := newSSE(res.Body)
			for {
				name, data, ok := ev.next()
				if !ok {
					return
				}
				ch <- event{name, data}
			}
		}()
		return ch
	}
	// nextQueued returns the "ahead" of the next event, which must be queued.
	nextQueued := func(ch <-chan event, who string) int {
		t.Helper()
		e := waitFor(t, ch, who+"'s next event")
		var q queuedEvent
		if e.name != "queued" || json.Unmarshal(e.data, &q) != nil {
			t.Fatalf("%s: event %q %s, want queued", who, e.name, e.data)
		}
		return q.Ahead
	}

	first := open(all)
	waitFor(t, started, "the first colorization to start")
	second := open(all)
	if n := nextQueued(second, "second"); n != 1 {
		t.Errorf("second: %d ahead, want 1", n)
	}
	ctx3, cancel3 := context.WithCancel(all)
	defer cancel3()
	third := open(ctx3)
	if n := nextQueued(third, "third"); n != 2 {
		t.Errorf("third: %d ahead, want 2", n)
	}
	fourth := open(all)
	if n := nextQueued(fourth, "fourth"); n != 3 {
		t.Errorf("fourth: %d ahead, want 3", n)
	}
	cancel3() // the third gives up: the fourth moves up
	if n := nextQueued(fourth, "fourth"); n != 2 {
		t.Errorf("fourth after the third left: %d ahead, want 2", n)
	}
	releaseOnce.Do(func() { close(release) }) // the first finishes: the second runs, the fourth moves up
	if e := waitFor(t, second, "the second's start"); e.name != "start" {
		t.Errorf("second: %q after the first finished, want start", e.name)
	}
	if n := nextQueued(fourth, "fourth"); n != 1 {
		t.Errorf("fourth after the first finished: %d ahead, want 1", n)
	}
	for _, ch := range []<-chan event{first, second, fourth} {
		last := ""
		for e := range ch {
			last = e.name
		}
		if last != "done" {
			t.Errorf("a colorization ended with %q", last)
		}
	}
}

// TestFullResolution: a 3000×2000 photo comes back as a 3000×2000 PNG whose
// luminance is the photo's to within rounding, coloured by the network's
// model-size sample of the whole frame; the model-size sample comes too.
func TestFullResolution(t *testing.T) {
	_, ts := newTestServer(t, Options{})
	src := image.NewRGBA(image.Rect(0, 0, 3000, 2000))
	for y := range 2000 {
		for x := range 3000 {
			i := src.PixOffset(x, y)
			src.Pix[i], src.Pix[i+1], src.Pix[i+2], src.Pix[i+3] = uint8(x*255/3000), uint8(y*255/2000), uint8((x^y)&255), 255
		}
	}
	file := encodePNG(t, src)
	body, ct := form(t, file, "steps", "10", "samples", "2", "seed", "5")
	s := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", body, ct))
	if s.done == nil || len(s.done.Full) != 2 || len(s.done.Images) != 2 {
		t.Fatalf("events %v, done %+v", s.order, s.done)
	}
	if s.done.Width != 3000 || s.done.Height != 2000 {
		t.Errorf("done: %d×%d, want 3000×2000", s.done.Width, s.done.Height)
	}
	// the model-size sample: the frame's 16×11 of the 16² square
	if b := decodeDataURL(t, s.done.Images[0]).Bounds(); b != image.Rect(0, 0, 16, 11) {
		t.Errorf("model-size sample %v, want 16×11 (the whole frame at the model's size)", b)
	}
	res, err := http.Get(ts.URL + s.done.Full[0])
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET %s: %d %s", s.done.Full[0], res.StatusCode, res.Header.Get("Content-Type"))
	}
	full, err := png.Decode(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if full.Bounds() != src.Bounds() {
		t.Fatalf("full-resolution result %v, want %v", full.Bounds(), src.Bounds())
	}
	want, got := dataset.ToGray(src), dataset.ToGray(full)
	worst, coloured := 0, 0
	for i := range want.Pix {
		d := int(got.Pix[i]) - int(want.Pix[i])
		worst = max(worst, d, -d)
	}
	rgba := full.(*image.RGBA)
	for i := 0; i < len(rgba.Pix); i += 4 {
		if rgba.Pix[i] != rgba.Pix[i+1] || rgba.Pix[i+1] != rgba.Pix[i+2] {
			coloured++
		}
	}
	if worst > 1 || coloured < len(want.Pix)/2 {
		t.Errorf("full-resolution luminance differs from the photo's by up to %d levels (want ≤ 1); %d of %d pixels coloured", worst, coloured, len(want.Pix))
	}
	// an unknown result
	res, _ = http.Get(ts.URL + "/api/results/0123456789abcdef0123456789abcdef/1.png")
	if msg := apiErr(t, res); res.StatusCode != 404 || !strings.Contains(msg, "colorize again") {
		t.Errorf("unknown result: %d %q", res.StatusCode, msg)
	}
}
