package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tinct/tinct/demo"
	"github.com/tinct/tinct/trainstate"
)

// The browser tests drive Debian's chromium with chromedp against a server
// on 127.0.0.1 holding a tiny checkpoint and a fake training run.
//
// TINCT_SCREENSHOTS=DIR also writes DIR/serve-desktop.png (1280×900) and
// DIR/serve-narrow.png (400×900) after a colorization; from the repository
// root: TINCT_SCREENSHOTS=$PWD/docs go test ./serve -run TestBrowser/screenshots

// browserPath returns the browser to drive: $TINCT_CHROMIUM if set, else
// /usr/bin/chromium, or chromium or google-chrome on the PATH; "" if none
// is there.
func browserPath() string {
	names := []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}
	if p := os.Getenv("TINCT_CHROMIUM"); p != "" {
		names = []string{p}
	}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// requireBrowser skips (loudly) when no browser is installed, except in CI,
// where the browser tests must run.
func requireBrowser(t *testing.T) string {
	t.Helper()
	if p := browserPath(); p != "" {
		return p
	}
	msg := "no chromium to drive (looked for $TINCT_CHROMIUM, /usr/bin/chromium, chromium, google-chrome): install it with apt-get install -y chromium"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, "SKIP:", msg)
	t.Skip(msg)
	return ""
}

// startBrowser starts a headless chromium with a fresh profile; it is
// stopped when the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := requireBrowser(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit
	})
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	t.Logf("started %s in %v", path, time.Since(start).Round(time.Millisecond))
	return ctx
}

// tab opens a new tab with a deadline for its actions. When the test ends,
// it fails the test if the page threw an exception, logged an error, or broke
// its Content-Security-Policy; failed requests (the browser logs 4xx
// answers as network errors) are allowed only with allowFailedRequests.
func tab(t *testing.T, browserCtx context.Context, allowFailedRequests bool) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleError && !(allowFailedRequests && m.Source == "network") {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("page console: %s", p)
		}
	})
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitJS waits until the expression is truthy.
func waitJS(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second))); err != nil {
		state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('status').textContent + ' | error: ' + document.getElementById('error').textContent`))
		t.Fatalf("waiting for %s: %v (page: %s)", expr, err, state)
	}
}

// checkViewer checks the enlarged view: an image naturalWidth pixels wide,
// shown at least as wide as its thumbnail (thumb CSS pixels) and inside the
// window; a model-size result in whole-pixel blocks (image-rendering:
// pixelated, a whole number of screen pixels per image pixel when there is
// room for two or more).
func checkViewer(t *testing.T, ctx context.Context, thumb float64, naturalWidth int, pixelated bool) {
	t.Helper()
	waitJS(t, ctx, fmt.Sprintf(`(() => { const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth === %d && i.getBoundingClientRect().width > 0; })()`, naturalWidth))
	v := run(t, ctx, chromedp.Evaluate[[]any](`(() => {
		const i = document.getElementById('viewer-img');
		const r = i.getBoundingClientRect();
		return [r.width, r.height, r.left, r.top, r.right, r.bottom, innerWidth, innerHeight, getComputedStyle(i).imageRendering];
	})()`))
	w, left, top, right, bottom := v[0].(float64), v[2].(float64), v[3].(float64), v[4].(float64), v[5].(float64)
	iw, ih, rendering := v[6].(float64), v[7].(float64), v[8].(string)
	if w < thumb {
		t.Errorf("a %d px wide result enlarged to %v px, smaller than its %v px thumbnail", naturalWidth, w, thumb)
	}
	if left < 0 || top < 0 || right > iw || bottom > ih {
		t.Errorf("the enlarged result (%v, %v)–(%v, %v) is not inside the %v×%v window", left, top, right, bottom, iw, ih)
	}
	if pixelated {
		if rendering != "pixelated" {
			t.Errorf("model-size result enlarged with image-rendering %q, want pixelated", rendering)
		}
		if scale := w / float64(naturalWidth); scale >= 2 && scale != float64(int(scale)) {
			t.Errorf("model-size result enlarged %v times: not whole pixels", scale)
		}
	}
}

// fastTimers makes the page's long timers (the dashboard's 15 s refresh)
// run 100 times faster, from the next navigation on.
func fastTimers(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `{ const si = window.setInterval; window.setInterval = (f, ms, ...a) => si(f, ms >= 5000 ? ms / 100 : ms, ...a); }`})
	if err != nil {
		t.Fatal(err)
	}
}

// etaPattern finds the estimate of the time left in the status line.
var etaPattern = regexp.MustCompile(`about ((?:\d+ min )?[\d.]+ s) left`)

// parseSeconds reads the page's "1.4 s" or "2 min 5 s".
func parseSeconds(s string) float64 {
	var m, sec float64
	if strings.Contains(s, "min") {
		fmt.Sscanf(s, "%g min %g s", &m, &sec)
	} else {
		fmt.Sscanf(s, "%g s", &sec)
	}
	return 60*m + sec
}

// demoModel is the bundled demo model, as tinct serve offers it.
func demoModel(t *testing.T) *trainstate.Network {
	t.Helper()
	m, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// settle waits until the page has stopped scrolling: scrollY the same for
// 20 animation frames in a row.
func settle(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, chromedp.Evaluate[chromedp.Void](`new Promise((done) => {
		let last = -1, same = 0;
		const tick = () => {
			if (scrollY === last) same++; else { same = 0; last = scrollY; }
			if (same >= 20) done(); else requestAnimationFrame(tick);
		};
		tick();
	})`, chromedp.EvalAwaitPromise))
}

// testPhoto returns a photo to upload: a bundled sample if present.
func testPhoto(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../data/sample/beach0.jpg"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "photo.png")
	if err := os.WriteFile(p, encodePNG(t, photo(64, 48)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadPhoto opens the page at url, chooses the photo at photoPath with
// the file picker and waits for its gray preview (size² pixels).
func loadPhoto(t *testing.T, ctx context.Context, url, photoPath string, size int) {
	t.Helper()
	do(t, ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("image")),
		chromedp.SetUploadFiles(chromedp.ID("image"), []string{photoPath}),
	)
	waitJS(t, ctx, fmt.Sprintf(`document.getElementById('gray').naturalWidth === %d`, size))
}

// colorizeInPage uploads a photo, sets the sliders with the keyboard and
// presses Colorize, then waits for samples results in the gallery, each
// width pixels wide (the photo's own width); size is the model's.
func colorizeInPage(t *testing.T, ctx context.Context, url, photoPath string, samples, size, width int) {
	t.Helper()
	loadPhoto(t, ctx, url, photoPath, size)
	waitJS(t, ctx, `!document.getElementById('gray-figure').hidden`)
	keys := kb.Home + strings.Repeat(kb.ArrowRight, samples-1)
	do(t, ctx,
		chromedp.Focus(chromedp.ID("steps")), chromedp.KeyEvent(kb.Home), // 10
		chromedp.Focus(chromedp.ID("samples")), chromedp.KeyEvent(keys),
	)
	if v := run(t, ctx, chromedp.Value(chromedp.ID("steps"))); v != "10" {
		t.Fatalf("steps slider at %s after Home, want 10", v)
	}
	if v := run(t, ctx, chromedp.Value(chromedp.ID("samples"))); v != fmt.Sprint(samples) {
		t.Fatalf("samples slider at %s, want %d", v, samples)
	}
	if out := run(t, ctx, chromedp.Value(chromedp.ID("samples-box"))); out != fmt.Sprint(samples) {
		t.Errorf("samples number box shows %q", out)
	}
	do(t, ctx, chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter)) // the keyboard presses Colorize
	waitJS(t, ctx, fmt.Sprintf(`(() => {
		const imgs = [...document.querySelectorAll('#gallery figure.result img')];
		return imgs.length === %d && imgs.every((i) => i.complete && i.naturalWidth === %d);
	})()`, samples, width))
}

func TestBrowser(t *testing.T) {
	began := time.Now()
	bctx := startBrowser(t)
	outputs := t.TempDir()
	fakeRun(t, filepath.Join(outputs, "2026-01-02_03-04-05"), 20, 21)
	_, ts := newTestServer(t, Options{OutputsDir: outputs, Queue: 2})
	photoPath := testPhoto(t)                      // 128×128
	wide := filepath.Join(t.TempDir(), "wide.png") // 3:2
	if err := os.WriteFile(wide, encodePNG(t, photo(300, 200)), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("colorize", func(t *testing.T) {
		ctx := tab(t, bctx, false)
		colorizeInPage(t, ctx, ts.URL, wide, 2, tinySize, 300)
		status := run(t, ctx, chromedp.Text(chromedp.ID("status")))
		if !strings.Contains(status, "Done: 2 colorizations, 10 steps") {
			t.Errorf("status %q", status)
		}
		if !run(t, ctx, chromedp.Evaluate[bool](`document.getElementById('error').hidden`)) {
			t.Errorf("error shown: %s", run(t, ctx, chromedp.Text(chromedp.ID("error"))))
		}
		// the keyboard's focus is back on Colorize, not lost to <body>
		if id := run(t, ctx, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.tagName`)); id != "go" {
			t.Errorf("focus after a colorization: %s, want the Colorize button", id)
		}
		// the photo itself is beside the results, first
		if w := run(t, ctx, chromedp.Evaluate[int](`(() => { const i = document.querySelector('#gallery figure:first-child.input img'); return i && i.complete ? i.naturalWidth : 0; })()`)); w != 300 {
			t.Errorf("the input beside the results is %d pixels wide, want the photo (300)", w)
		}

		// Each result has the model-size sample as a data: PNG of the
		// photo's frame (16×11 of 16² for 3:2)…
		hrefs := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#gallery a.download-model')].map((a) => a.href)`))
		if len(hrefs) != 2 {
			t.Fatalf("%d model-size download links", len(hrefs))
		}
		for _, h := range hrefs {
			if img := decodeDataURL(t, h); img.Bounds() != image.Rect(0, 0, tinySize, 11) {
				t.Errorf("model-size download is %v, want 16×11", img.Bounds())
			}
		}
		// …and the full-resolution result, downloaded for real.
		dir := t.TempDir()
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir, EventsEnabled: new(true)})
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range []struct {
			css  string
			size image.Rectangle
			tail string
		}{{"#gallery a.download-full", image.Rect(0, 0, 300, 200), "-1.png"}, {"#gallery a.download-model", image.Rect(0, 0, tinySize, 11), "-1-model.png"}} {
			progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
			name := run(t, ctx, chromedp.Evaluate[string](`document.querySelector('`+link.css+`').download`))
			do(t, ctx, chromedp.Click(chromedp.CSS(link.css)))
			for ev, err := range progress {
				if err != nil {
					t.Fatalf("download: %v", err)
				}
				if ev.State == browser.DownloadProgressStateCanceled {
					t.Fatal("download cancelled")
				}
				if ev.State == browser.DownloadProgressStateCompleted {
					break
				}
			}
			f, err := os.Open(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(f)
			f.Close()
			if err != nil || img.Bounds() != link.size {
				t.Errorf("downloaded %s: %v, %v, want %v", name, err, img.Bounds(), link.size)
			}
			if !strings.HasPrefix(name, "tinct-epoch-000001-seed") || !strings.HasSuffix(name, link.tail) {
				t.Errorf("download name %q", name)
			}
		}

		// Selecting a result enlarges it: at least as large as its
		// thumbnail, as large as the window allows; the model-size result
		// (16×11) is shown too, in whole-pixel blocks (pixelated, not
		// blurred). Escape closes the view.
		thumb := run(t, ctx, chromedp.Evaluate[float64](`document.querySelector('#gallery figure.result img').getBoundingClientRect().width`))
		do(t, ctx, chromedp.Focus(chromedp.CSS("#gallery figure.result button.enlarge")), chromedp.KeyEvent(kb.Enter))
		waitJS(t, ctx, `document.getElementById('viewer').open && document.getElementById('viewer-img').naturalWidth === 300`)
		checkViewer(t, ctx, thumb, 300, false)
		do(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('viewer-size').click()`)) // fails at once without the button
		waitJS(t, ctx, `document.getElementById('viewer-img').naturalWidth === 16 && document.getElementById('viewer-img').complete`)
		checkViewer(t, ctx, thumb, 16, true)
		if wide := run(t, ctx, chromedp.Evaluate[float64](`document.getElementById('viewer-img').getBoundingClientRect().width`)); wide < 600 {
			t.Errorf("the 16×11 model-size result enlarged to %v px in a 1280 px window", wide)
		}
		do(t, ctx, chromedp.KeyEvent(kb.Escape))
		waitJS(t, ctx, `!document.getElementById('viewer').open`)
	})

	t.Run("photo", func(t *testing.T) {
		// The chosen photo is shown as it is; an example can be chosen by a
		// click, a photo pasted, and Clear forgets it all.
		ctx := tab(t, bctx, false)
		do(t, ctx, chromedp.Navigate(ts.URL), chromedp.WaitVisible(chromedp.ID("image")))
		do(t, ctx, chromedp.Click(chromedp.CSS(`button.example[data-src$="city3.jpg"]`)))
		waitJS(t, ctx, `!document.getElementById('photo-box').hidden && document.getElementById('original').naturalWidth === 128 &&
			document.getElementById('gray').naturalWidth === 16 && document.getElementById('original-caption').textContent.includes('example-city3.jpg, 128×128')`)
		colorizeAction := func() {
			do(t, ctx, chromedp.Focus(chromedp.ID("steps")), chromedp.KeyEvent(kb.Home), chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter))
			waitJS(t, ctx, `document.querySelectorAll('#gallery figure.result img').length === 1 && document.querySelector('#gallery figure.result img').naturalWidth === 128`)
		}
		colorizeAction()
		do(t, ctx, chromedp.Click(chromedp.ID("clear")))
		waitJS(t, ctx, `document.getElementById('photo-box').hidden && document.getElementById('gallery').children.length === 0 &&
			document.getElementById('image').files.length === 0 && document.activeElement.id === 'image'`)
		do(t, ctx, chromedp.Click(chromedp.ID("go")))
		waitJS(t, ctx, `document.getElementById('error').textContent.includes('Choose a photo first')`)

		// paste: a clipboard event carrying a PNG
		do(t, ctx, chromedp.Evaluate[chromedp.Void](`(async () => {
			const c = document.createElement('canvas');
			c.width = 60; c.height = 40;
			const g = c.getContext('2d');
			g.fillStyle = '#888'; g.fillRect(0, 0, 60, 40); g.fillStyle = '#222'; g.fillRect(0, 0, 30, 40);
			const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
			const dt = new DataTransfer();
			dt.items.add(new File([blob], 'clipboard.png', { type: 'image/png' }));
			document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
		})()`, chromedp.EvalAwaitPromise))
		waitJS(t, ctx, `document.getElementById('original').naturalWidth === 60 && document.getElementById('gray').naturalWidth === 16 &&
			document.getElementById('error').hidden`)
		colorizeAction2 := func() {
			do(t, ctx, chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter))
			waitJS(t, ctx, `document.querySelectorAll('#gallery figure.result img').length === 1 && document.querySelector('#gallery figure.result img').naturalWidth === 60`)
		}
		colorizeAction2()
	})

	t.Run("drop", func(t *testing.T) {
		ctx := tab(t, bctx, false)
		do(t, ctx, chromedp.Navigate(ts.URL), chromedp.WaitVisible(chromedp.ID("drop")))
		pos := run(t, ctx, chromedp.Evaluate[[]float64](`(() => {
			const r = document.getElementById('drop').getBoundingClientRect();
			return [r.x + r.width / 2, r.y + r.height / 2];
		})()`))
		data := &input.DragData{Items: []*input.DragDataItem{}, Files: []string{photoPath}, DragOperationsMask: 1}
		for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
			if _, err := chromedp.Call(ctx, input.DispatchDragEvent, input.DispatchDragEventParams{Type: typ, X: pos[0], Y: pos[1], Data: data}); err != nil {
				t.Fatal(err)
			}
		}
		waitJS(t, ctx, `document.getElementById('gray').naturalWidth === 16`)
		waitJS(t, ctx, `document.getElementById('original').naturalWidth === 128`)
		caption := run(t, ctx, chromedp.Text(chromedp.ID("original-caption"))) + " | " + run(t, ctx, chromedp.Text(chromedp.ID("gray-caption")))
		if !strings.Contains(caption, filepath.Base(photoPath)+", 128×128") || !strings.Contains(caption, "16×16") {
			t.Errorf("captions after a drop: %q", caption)
		}
	})

	t.Run("errors", func(t *testing.T) {
		ctx := tab(t, bctx, true)
		notImage := filepath.Join(t.TempDir(), "holiday.png")
		os.WriteFile(notImage, []byte("this is not a picture\n"), 0o644)
		do(t, ctx,
			chromedp.Navigate(ts.URL),
			chromedp.WaitVisible(chromedp.ID("image")),
			chromedp.SetUploadFiles(chromedp.ID("image"), []string{notImage}),
		)
		waitJS(t, ctx, `!document.getElementById('error').hidden`)
		if msg := run(t, ctx, chromedp.Text(chromedp.ID("error"))); !strings.Contains(msg, "not a PNG or JPEG image") {
			t.Errorf("error after a non-image upload: %q", msg)
		}
		// The refused file is no longer selected: Colorize asks for a photo
		// instead of sending it again.
		if n := run(t, ctx, chromedp.Evaluate[int](`document.getElementById('image').files.length`)); n != 0 {
			t.Errorf("%d files still selected after the server refused the photo", n)
		}
		do(t, ctx, chromedp.Click(chromedp.ID("go")))
		waitJS(t, ctx, `document.getElementById('error').textContent.includes('Choose a photo first')`)
		if n := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('#gallery figure.result').length`)); n != 0 {
			t.Errorf("%d results after an error", n)
		}

		// A file over the byte limit is refused before it is sent.
		big := filepath.Join(t.TempDir(), "big.jpg")
		if err := os.Truncate(createEmpty(t, big), DefaultMaxUploadBytes+1); err != nil {
			t.Fatal(err)
		}
		do(t, ctx, chromedp.SetUploadFiles(chromedp.ID("image"), []string{big}))
		waitJS(t, ctx, `document.getElementById('error').textContent.includes('more than the limit of 20 MiB')`)

		// The API answers 4xx with a message for bad fields.
		type answer struct {
			Status int    `json:"status"`
			Error  string `json:"error"`
		}
		got := run(t, ctx, chromedp.Evaluate[[]answer](`(async () => {
			const c = document.createElement('canvas');
			c.width = 24; c.height = 24;
			c.getContext('2d').fillRect(0, 0, 12, 12);
			const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
			const send = async (fields, withImage) => {
				const f = new FormData();
				if (withImage) f.append('image', blob, 'a.png');
				for (const [k, v] of Object.entries(fields)) f.append(k, v);
				const res = await fetch('/api/colorize', { method: 'POST', body: f });
				return { status: res.status, error: (await res.json()).error };
			};
			return [
				await send({ steps: '5', samples: '1' }, true),
				await send({ steps: '10', samples: '9' }, true),
				await send({ steps: '10', samples: '1' }, false),
			];
		})()`, chromedp.EvalAwaitPromise))
		want := []answer{{400, "steps 5: out of range"}, {400, "samples 9: out of range"}, {400, "no photo"}}
		for i := range want {
			if i >= len(got) || got[i].Status != want[i].Status || !strings.Contains(got[i].Error, want[i].Error) {
				t.Errorf("API answer %d: %+v, want %+v", i, got, want[i])
			}
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		ctx := tab(t, bctx, false)
		do(t, ctx, chromedp.Navigate(ts.URL))
		waitJS(t, ctx, `document.querySelector('#plot-step polyline') && document.querySelector('#plot-epoch polyline') &&
			document.getElementById('grid').naturalWidth > 0 && document.getElementById('cluster').textContent.includes('Not attached to a coordinator')`)
		info := run(t, ctx, chromedp.Text(chromedp.ID("run-info")))
		if !strings.Contains(info, "Run 2026-01-02_03-04-05") || !strings.Contains(info, "epoch 20 of 20") {
			t.Errorf("run info %q", info)
		}
		if src := run(t, ctx, chromedp.Evaluate[string](`document.getElementById('grid').src`)); !strings.HasSuffix(src, "/run/images/samples-00000020.png") {
			t.Errorf("grid shown first: %s, want the last epoch's", src)
		}
		do(t, ctx, chromedp.Focus(chromedp.ID("grid-epoch")), chromedp.KeyEvent(kb.Home))
		waitJS(t, ctx, `document.getElementById('grid').src.endsWith('/run/images/samples-00000001.png') && document.getElementById('grid').naturalWidth > 0`)
		if label := run(t, ctx, chromedp.Evaluate[string](`document.getElementById('plot-step').getAttribute('aria-label')`)); !strings.Contains(label, "420 points") {
			t.Errorf("loss plot label %q", label)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		// A server whose first colorization holds at step 1 until its
		// client goes away.
		started := make(chan struct{})
		finished := make(chan error, 1)
		srv, err := New(Options{Store: ts.Config.Handler.(*Server).opts.Store, OutputsDir: outputs})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{}) // a failed test must not leave the server waiting
		srv.progress = func(ctx context.Context, step, steps int) {
			if step == 1 {
				close(started)
				select {
				case <-ctx.Done():
				case <-stop:
				}
			}
		}
		srv.finished = func(err error) { finished <- err }
		hts := httptest.NewServer(srv)
		defer hts.Close()
		defer close(stop)

		ctx := tab(t, bctx, false)
		loadPhoto(t, ctx, hts.URL, photoPath, 16)
		do(t, ctx, chromedp.Click(chromedp.ID("go")))
		waitFor(t, started, "the colorization to start")
		waitJS(t, ctx, `document.getElementById('status').textContent.startsWith('Step 1 of 100') && !document.getElementById('cancel').hidden`)
		// after the first step: the time spent; the time left is measured
		// from the steps after it (test "eta")
		if st := run(t, ctx, chromedp.Text(chromedp.ID("status"))); !strings.Contains(st, " s · estimating the time left") {
			t.Errorf("status while colorizing: %q, want the time spent and that the time left is being estimated", st)
		}
		if id := run(t, ctx, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.tagName`)); id != "cancel" {
			t.Errorf("focus while colorizing: %s, want the Cancel button", id)
		}
		do(t, ctx, chromedp.KeyEvent(kb.Enter)) // Cancel, by keyboard
		if err := waitFor(t, finished, "the server to stop the colorization"); !errors.Is(err, context.Canceled) {
			t.Errorf("the server's colorization ended with %v, want context.Canceled", err)
		}
		waitJS(t, ctx, `document.getElementById('status').textContent === 'Cancelled.' && !document.getElementById('go').disabled && document.getElementById('cancel').hidden`)
		if id := run(t, ctx, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.tagName`)); id != "go" {
			t.Errorf("focus after Cancel: %s, want the Colorize button", id)
		}
	})

	t.Run("waiting", func(t *testing.T) {
		// While a colorization waits in the queue the page counts the time
		// every second, between the server's events, and shows the
		// server's estimate of the wait (from its recent colorizations).
		srv, err := New(Options{Store: ts.Config.Handler.(*Server).opts.Store, Queue: 2})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var slow time.Duration // each step's time
		var hold chan struct{} // the next colorization holds at step 1 until it is closed
		started := make(chan struct{}, 1)
		srv.progress = func(ctx context.Context, step, steps int) {
			mu.Lock()
			h, d := hold, slow
			if step == 1 {
				hold = nil
			}
			mu.Unlock()
			time.Sleep(d)
			if step == 1 && h != nil {
				started <- struct{}{}
				select {
				case <-h:
				case <-ctx.Done():
				}
			}
		}
		hts := httptest.NewServer(srv)
		defer hts.Close()
		colorize := func() streamed {
			body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
			return readStream(t, post(t, context.Background(), hts.URL+"/api/colorize", body, ct))
		}
		// a colorization of about 5 s, which the estimate learns from
		mu.Lock()
		slow = 500 * time.Millisecond
		mu.Unlock()
		if st := colorize(); st.done == nil {
			t.Fatal("the first colorization did not finish")
		}
		// another that holds the server at its first step
		release := make(chan struct{})
		mu.Lock()
		slow, hold = 0, release
		mu.Unlock()
		held := make(chan streamed, 1)
		go func() { held <- colorize() }()
		waitFor(t, started, "the second colorization to start")
		defer func() { // a failed test must not leave the server waiting
			select {
			case <-release:
			default:
				close(release)
			}
		}()

		ctx := tab(t, bctx, false)
		loadPhoto(t, ctx, hts.URL, photoPath, 16)
		do(t, ctx, chromedp.Focus(chromedp.ID("steps")), chromedp.KeyEvent(kb.Home), chromedp.Click(chromedp.ID("go")))
		waitJS(t, ctx, `document.getElementById('status').textContent.includes('1 ahead of you')`)
		first := run(t, ctx, chromedp.Text(chromedp.ID("status")))
		time.Sleep(2100 * time.Millisecond) // no queue event comes meanwhile: the line does not move
		later := run(t, ctx, chromedp.Text(chromedp.ID("status")))
		t.Logf("waiting: %q, 2 s later %q", first, later)
		if first == later {
			t.Errorf("the waiting message stood still for 2 s: %q", later)
		}
		if !strings.Contains(later, "so far") {
			t.Errorf("waiting message %q: want the time waited so far", later)
		}
		// the wait: the 5 s colorization's time less the held one's
		if !strings.Contains(first, "your turn in about ") && !strings.Contains(first, "your turn any moment") {
			t.Errorf("waiting message %q: want an estimate of the wait", first)
		}
		close(release)
		if st := waitFor(t, held, "the held colorization"); st.done == nil {
			t.Error("the held colorization did not finish")
		}
		waitJS(t, ctx, `document.getElementById('status').textContent.startsWith('Done:') &&
			[...document.querySelectorAll('#gallery figure.result img')].every((i) => i.complete && i.naturalWidth > 0)`)
	})

	t.Run("eta", func(t *testing.T) {
		// The bundled demo model on a fresh server: the first step of a new
		// sampler (8 colorizations) takes several times a later one (its
		// memory, the backend's first call). The estimate of the time left
		// comes from the steps after it, and is within half of the time
		// the rest then takes. Each step also waits 0.1 s, so that the
		// measurement does not hang on milliseconds of a shared machine.
		fb := demoModel(t)
		srv, err := New(Options{Fallback: fb})
		if err != nil {
			t.Fatal(err)
		}
		srv.progress = func(ctx context.Context, step, steps int) { time.Sleep(100 * time.Millisecond) }
		hts := httptest.NewServer(srv)
		defer hts.Close()
		ctx := tab(t, bctx, false)
		loadPhoto(t, ctx, hts.URL, photoPath, fb.ImageSize)
		// the demo model's date is its card's, not year 1
		label := run(t, ctx, chromedp.Evaluate[string](`[...document.getElementById('checkpoint').options].map((o) => o.textContent).join(' | ')`))
		if !strings.Contains(label, "bundled demo model, step 9042, 2026-12-03") || strings.Contains(label, "0001") {
			t.Errorf("checkpoints listed: %q, want the demo model with its card's date", label)
		}
		do(t, ctx, chromedp.Evaluate[chromedp.Void](`window.statusLog = [];
			new MutationObserver(() => statusLog.push([performance.now(), document.getElementById('status').textContent]))
				.observe(document.getElementById('status'), { childList: true, characterData: true, subtree: true });`))
		do(t, ctx,
			chromedp.Focus(chromedp.ID("steps")), chromedp.KeyEvent(kb.Home),
			chromedp.Focus(chromedp.ID("samples")), chromedp.KeyEvent(kb.End),
			chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter))
		waitJS(t, ctx, `document.getElementById('status').textContent.startsWith('Done:') &&
			[...document.querySelectorAll('#gallery figure.result img')].every((i) => i.complete && i.naturalWidth > 0)`)
		type entry struct {
			At   float64
			Text string
		}
		raw := run(t, ctx, chromedp.Evaluate[[][]any](`statusLog`))
		var log []entry
		for _, e := range raw {
			log = append(log, entry{e[0].(float64), e[1].(string)})
		}
		var eta, real float64
		var etaText string
		for _, e := range log {
			if m := etaPattern.FindStringSubmatch(e.Text); m != nil && etaText == "" {
				etaText, eta = e.Text, parseSeconds(m[1])
				for _, d := range log {
					if strings.HasPrefix(d.Text, "Done:") {
						real = (d.At - e.At) / 1000
					}
				}
			}
		}
		var texts []string
		for _, e := range log {
			texts = append(texts, fmt.Sprintf("%.0f ms %s", e.At-log[0].At, e.Text))
		}
		t.Logf("status: %s", strings.Join(texts, "\n"))
		if etaText == "" || real <= 0 {
			t.Fatalf("no estimate of the time left, or no end")
		}
		if math.Abs(eta-real) > 0.5*real {
			t.Errorf("first estimate %q: %.2f s left; the rest took %.2f s (want within 50%%)", etaText, eta, real)
		}
	})

	t.Run("no run", func(t *testing.T) {
		// With no training run the dashboard says how to start one, in
		// place of empty plots, and the page does not keep asking for it;
		// Refresh looks again, and once a run is there it is followed.
		// (The page's 15 s timers run 100 times faster here.)
		empty := t.TempDir()
		srv, err := New(Options{Store: ts.Config.Handler.(*Server).opts.Store, OutputsDir: empty})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		runRequests := 0
		hts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/run" {
				mu.Lock()
				runRequests++
				mu.Unlock()
			}
			srv.ServeHTTP(w, r)
		}))
		defer hts.Close()
		requests := func() int { mu.Lock(); defer mu.Unlock(); return runRequests }
		ctx := tab(t, bctx, false) // a failed request (a 404) is a console error
		fastTimers(t, ctx)
		do(t, ctx, chromedp.Navigate(hts.URL))
		waitJS(t, ctx, `!document.getElementById('run-info').textContent.startsWith('Loading')`)
		got := run(t, ctx, chromedp.Evaluate[[]any](`[document.getElementById('run-info').textContent,
			document.querySelector('.plots').getClientRects().length > 0, document.getElementById('grids-none').getClientRects().length > 0]`))
		info, plots, grids := got[0].(string), got[1].(bool), got[2].(bool)
		if !strings.Contains(info, "No training run") || !strings.Contains(info, "tinct train") || !strings.Contains(info, "--run DIR") {
			t.Errorf("dashboard without a run says %q; want how to start one (tinct train, --run DIR)", info)
		}
		if plots || grids {
			t.Errorf("dashboard without a run shows its plots (%v) or grids' note (%v)", plots, grids)
		}
		time.Sleep(1500 * time.Millisecond) // 150 s at the page's pace: 10 refreshes
		if n := requests(); n != 1 {
			t.Errorf("%d requests for /api/run without a run, want 1 (no polling)", n)
		}
		// a run starts; Refresh shows it, and from then on it is followed
		fakeRun(t, filepath.Join(empty, "2026-01-03_00-00-00"), 2, 3)
		do(t, ctx, chromedp.Click(chromedp.ID("refresh")))
		waitJS(t, ctx, `document.querySelector('#plot-step polyline') && document.getElementById('run-info').textContent.includes('Run 2026-01-03_00-00-00')`)
		before := requests()
		time.Sleep(1500 * time.Millisecond)
		if n := requests() - before; n < 3 {
			t.Errorf("%d requests for /api/run in 150 s (page time) with a run, want it followed every 15 s", n)
		}
	})

	t.Run("damaged", func(t *testing.T) {
		// The newest checkpoint is damaged: the page names it and
		// colorizes with the newest valid one; asking for the damaged one
		// anyway gives an error that names it and suggests another.
		dir, store := tinyStore(t)
		saveTiny(t, store, "epoch-000002", 20, 2)
		if err := os.WriteFile(filepath.Join(dir, "epoch-000002", "ema.safetensors"), []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, hts := newTestServer(t, Options{Store: dir})
		ctx := tab(t, bctx, true) // the damaged checkpoint's request fails
		do(t, ctx, chromedp.Navigate(hts.URL))
		waitJS(t, ctx, `document.getElementById('checkpoint-note').textContent !== ''`)
		got := run(t, ctx, chromedp.Evaluate[[]string](`[document.getElementById('checkpoint-note').textContent,
			[...document.getElementById('checkpoint').options].map((o) => o.textContent + (o.disabled ? ' (disabled)' : '')).join(' | ')]`))
		note, options := got[0], got[1]
		if !strings.Contains(note, "epoch-000002 is damaged") || !strings.Contains(note, "part ema.safetensors") || !strings.Contains(note, "Colorizing with epoch-000001") {
			t.Errorf("checkpoint note %q: want epoch-000002 named damaged, and epoch-000001 used", note)
		}
		if !strings.HasPrefix(options, "Newest (epoch-000001)") || !strings.Contains(options, "epoch-000002 — damaged (disabled)") {
			t.Errorf("checkpoint list %q: want Newest to be epoch-000001, and epoch-000002 not to be chosen", options)
		}
		colorizeInPage(t, ctx, hts.URL, photoPath, 1, tinySize, 128)
		if st := run(t, ctx, chromedp.Text(chromedp.ID("gray-caption"))); !strings.Contains(st, "checkpoint epoch-000001") {
			t.Errorf("gray caption %q, want the newest valid checkpoint", st)
		}
		// a page that listed epoch-000002 before it was damaged, and chose it
		do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => {
			const sel = document.getElementById('checkpoint');
			const o = [...sel.options].find((o) => o.value === 'epoch-000002');
			o.disabled = false;
			sel.value = 'epoch-000002';
			sel.dispatchEvent(new Event('change'));
		})()`))
		waitJS(t, ctx, `!document.getElementById('error').hidden`)
		if msg := run(t, ctx, chromedp.Text(chromedp.ID("error"))); !strings.Contains(msg, "epoch-000002 is damaged") || !strings.Contains(msg, "choose another, e.g. epoch-000001") || strings.Contains(msg, "internal error") {
			t.Errorf("error for the damaged checkpoint: %q", msg)
		}
		// the photo is kept: the checkpoint, not the photo, is at fault
		if n := run(t, ctx, chromedp.Evaluate[int](`document.getElementById('original').naturalWidth`)); n != 128 {
			t.Errorf("the photo was dropped after the damaged checkpoint's error")
		}
	})

	t.Run("number boxes", func(t *testing.T) {
		// The number boxes take any whole number in range, as the API does,
		// and move the sliders; the sliders move the boxes.
		ctx := tab(t, bctx, false)
		loadPhoto(t, ctx, ts.URL, photoPath, 16)
		do(t, ctx, chromedp.Focus(chromedp.ID("steps-box")), chromedp.KeyEvent(kb.End), chromedp.KeyEvent(kb.Backspace+kb.Backspace+kb.Backspace+"15"),
			chromedp.Focus(chromedp.ID("samples-box")), chromedp.KeyEvent(kb.ArrowUp))
		if v := run(t, ctx, chromedp.Evaluate[[]string](`['steps', 'samples'].map((id) => document.getElementById(id).value)`)); v[0] != "15" || v[1] != "2" {
			t.Errorf("sliders at %v after typing 15 and pressing ↑ in the boxes, want [15 2]", v)
		}
		do(t, ctx, chromedp.Focus(chromedp.ID("steps")), chromedp.KeyEvent(kb.ArrowRight))
		if v := run(t, ctx, chromedp.Value(chromedp.ID("steps-box"))); v != "16" {
			t.Errorf("steps box at %s after → on the slider, want 16", v)
		}
		do(t, ctx, chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter))
		waitJS(t, ctx, `document.querySelectorAll('#gallery figure.result').length === 2 && document.getElementById('status').textContent.includes('16 steps')`)
	})

	t.Run("plot ticks", func(t *testing.T) {
		// three epochs whose loss hardly moves: several y ticks, and whole
		// epochs on the x axis
		dir := filepath.Join(t.TempDir(), "run")
		os.MkdirAll(dir, 0o755)
		var b strings.Builder
		for e, v := range []float64{0.0312, 0.0305, 0.0299} {
			for k := range 4 {
				fmt.Fprintf(&b, `{"time":"2026-01-01T00:00:00Z","tag":"loss/step","step":%d,"value":%g}`+"\n", 4*e+k+1, v+0.0003*float64(k))
			}
			fmt.Fprintf(&b, `{"time":"2026-01-01T00:00:00Z","tag":"loss/epoch","step":%d,"value":%g}`+"\n", e+1, v)
		}
		os.WriteFile(filepath.Join(dir, "metrics.jsonl"), []byte(b.String()), 0o644)
		srv, err := New(Options{RunDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		hts := httptest.NewServer(srv)
		defer hts.Close()
		ctx := tab(t, bctx, true)
		do(t, ctx, chromedp.Navigate(hts.URL))
		waitJS(t, ctx, `document.querySelector('#plot-epoch polyline')`)
		for _, id := range []string{"plot-epoch", "plot-step"} {
			ticks := run(t, ctx, chromedp.Evaluate[[][]string](fmt.Sprintf(`(() => {
				const svg = document.getElementById('%s');
				const texts = (anchor) => [...svg.querySelectorAll('text[text-anchor="' + anchor + '"]')].map((e) => e.textContent);
				return [texts('end'), texts('middle').filter((s) => /^[0-9.e+-]+$/.test(s))];
			})()`, id)))
			y, x := ticks[0], ticks[1]
			if len(y) < 3 {
				t.Errorf("%s: y ticks %q, want at least 3", id, y)
			}
			if len(x) < 2 {
				t.Errorf("%s: x ticks %q, want at least 2", id, x)
			}
			for _, v := range x {
				if strings.ContainsAny(v, ".e") {
					t.Errorf("%s: x tick %q is not a whole %s", id, v, strings.TrimPrefix(id, "plot-"))
				}
			}
		}
	})

	t.Run("cross-site", func(t *testing.T) {
		// Another site's page (another origin: another port) posts to the
		// colorizer, with a script and with an auto-submitted form.
		srv, err := New(Options{Store: ts.Config.Handler.(*Server).opts.Store})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		ran := 0
		srv.finished = func(error) { mu.Lock(); ran++; mu.Unlock() }
		target := httptest.NewServer(srv)
		defer target.Close()
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<!doctype html><form id="f" method="post" enctype="multipart/form-data" action="%s/api/colorize">
<input type="hidden" name="steps" value="100"><input type="hidden" name="samples" value="8">
<textarea name="image">not really a photo</textarea></form>`, target.URL)
		}))
		defer evil.Close()
		ctx := tab(t, bctx, true)
		do(t, ctx, chromedp.Navigate(evil.URL))
		status := run(t, ctx, chromedp.Evaluate[string](fmt.Sprintf(`(async () => {
			const c = document.createElement('canvas');
			c.width = 24; c.height = 24;
			const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
			const f = new FormData();
			f.append('image', blob, 'a.png'); f.append('steps', '100'); f.append('samples', '8');
			const res = await fetch('%s/api/colorize', { method: 'POST', body: f, mode: 'no-cors' });
			return res.type;
		})()`, target.URL), chromedp.EvalAwaitPromise))
		if status != "opaque" {
			t.Errorf("the script's request: %q", status)
		}
		do(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('f').submit()`))
		// the form navigates the tab to the answer
		var body string
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(body, "another site"); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the form's answer: %q", body)
			}
			body, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`location.href.endsWith('/api/colorize') && document.body ? document.body.textContent : ''`))
		}
		mu.Lock()
		defer mu.Unlock()
		if ran != 0 {
			t.Errorf("%d cross-site requests reached the colorizer", ran)
		}
	})

	t.Run("token", func(t *testing.T) {
		const token = "a-token-of-twenty-chars"
		srv, err := New(Options{Store: ts.Config.Handler.(*Server).opts.Store, OutputsDir: outputs, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		hts := httptest.NewServer(srv)
		defer hts.Close()
		ctx := tab(t, bctx, true)
		do(t, ctx, chromedp.Navigate(hts.URL))
		waitJS(t, ctx, `!document.getElementById('login').hidden && document.activeElement.id === 'token'`)
		do(t, ctx, chromedp.SendKeys(chromedp.ID("token"), "wrong-token-0123456789"), chromedp.KeyEvent(kb.Enter))
		waitJS(t, ctx, `document.getElementById('login-note').textContent.includes('wrong token')`)
		do(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('token').value = ''`), chromedp.SendKeys(chromedp.ID("token"), token), chromedp.KeyEvent(kb.Enter))
		waitJS(t, ctx, `document.getElementById('login').hidden && document.getElementById('checkpoint').options.length > 1 &&
			document.querySelector('#plot-step polyline') && document.getElementById('grid').naturalWidth > 0`)
		colorizeInPage(t, ctx, hts.URL, photoPath, 1, tinySize, 128) // the cookie outlives a reload
	})

	t.Run("narrow", func(t *testing.T) {
		// The stream ends a moment after its "done" event (as over a slow
		// network): the Colorize button gets the focus back while the page
		// scrolls to the results, or after, and must not scroll it back.
		srv, err := New(Options{Store: ts.Config.Handler.(*Server).opts.Store, OutputsDir: outputs})
		if err != nil {
			t.Fatal(err)
		}
		srv.finished = func(error) { time.Sleep(500 * time.Millisecond) }
		hts := httptest.NewServer(srv)
		defer hts.Close()
		ctx := tab(t, bctx, false)
		do(t, ctx, chromedp.EmulateViewport(400, 900, chromedp.EmulateMobile))
		colorizeInPage(t, ctx, hts.URL, photoPath, 2, tinySize, 128)
		// On a phone the results are scrolled into view when they arrive:
		// once the scroll has come to rest, the heading and the top of the
		// images are inside the viewport (not scrolled past by what the
		// finished colorization hid above them: the preview and the bar).
		settle(t, ctx)
		pos := run(t, ctx, chromedp.Evaluate[[]float64](`(() => {
			const h = document.getElementById('results-title').getBoundingClientRect();
			const img = document.querySelector('#gallery figure.result img').getBoundingClientRect();
			return [h.top, h.bottom, img.top, innerHeight, scrollY];
		})()`))
		if pos[0] < 0 || pos[1] > pos[3] || pos[2] < 0 || pos[2] >= pos[3] {
			t.Errorf("after the scroll to the results (scrollY %v, viewport %v px high): heading from %v to %v, images' top at %v; want all inside the viewport", pos[4], pos[3], pos[0], pos[1], pos[2])
		}
		if pos[0] > 32 {
			t.Errorf("after the scroll to the results the heading is %v px from the top of the window, want it at the top", pos[0])
		}
		layout := run(t, ctx, chromedp.Evaluate[[]float64](`[
			document.documentElement.scrollWidth,
			getComputedStyle(document.getElementById('gallery')).gridTemplateColumns.split(' ').length,
			document.getElementById('training').getBoundingClientRect().top > document.getElementById('colorize').getBoundingClientRect().bottom - 1 ? 1 : 0,
		]`))
		if layout[0] > 400 {
			wide := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('*')].filter((e) => e.getBoundingClientRect().right > 396 || e.scrollWidth > e.clientWidth + 1).map((e) => e.tagName + '#' + e.id + '.' + e.className + ' ' + e.getBoundingClientRect().right + ' ' + e.scrollWidth + '/' + e.clientWidth).concat([String(innerWidth), String(document.documentElement.clientWidth)])`))
			t.Logf("wider than 400 px: %v", wide)
		}
		if layout[0] > 400 || layout[1] != 2 || layout[2] != 1 {
			t.Errorf("at 400 px: page width %v, gallery columns %v, panels stacked %v", layout[0], layout[1], layout[2])
		}
		// A 128² result enlarged on a phone: larger than its thumbnail
		// (about 164 px), not its own 128 px.
		thumb := run(t, ctx, chromedp.Evaluate[float64](`document.querySelector('#gallery figure.result img').getBoundingClientRect().width`))
		do(t, ctx, chromedp.Click(chromedp.CSS("#gallery figure.result button.enlarge")))
		waitJS(t, ctx, `document.getElementById('viewer').open`)
		checkViewer(t, ctx, thumb, 128, false)
		do(t, ctx, chromedp.Click(chromedp.ID("viewer-close")))
		waitJS(t, ctx, `!document.getElementById('viewer').open`)
	})

	t.Run("screenshots", func(t *testing.T) {
		dir := os.Getenv("TINCT_SCREENSHOTS")
		if dir == "" {
			t.Skip("set TINCT_SCREENSHOTS=DIR to write serve-desktop.png and serve-narrow.png")
		}
		// The bundled demo model colorizes, as for tinct serve on a fresh
		// clone (no checkpoint in the store), and the dashboard shows the
		// test's synthetic run; TINCT_SCREENSHOTS_STORE (a store whose
		// newest checkpoint colorizes instead) and TINCT_SCREENSHOTS_RUN (a
		// real run, e.g. of configs/sample.yaml) change that.
		opts := Options{Fallback: demoModel(t), OutputsDir: outputs, Store: os.Getenv("TINCT_SCREENSHOTS_STORE"), RunDir: os.Getenv("TINCT_SCREENSHOTS_RUN")}
		s, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.models.get(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		shown := httptest.NewServer(s)
		defer shown.Close()
		url, size := shown.URL, m.ImageSize
		for _, shot := range []struct {
			name          string
			width, height int64
		}{{"serve-desktop.png", 1280, 900}, {"serve-narrow.png", 400, 900}} {
			ctx := tab(t, bctx, false)
			do(t, ctx, chromedp.EmulateViewport(shot.width, shot.height))
			colorizeInPage(t, ctx, url, photoPath, 3, size, 128)
			// again with 50 steps: smoother colours than 10 give
			do(t, ctx, chromedp.Focus(chromedp.ID("steps-box")), chromedp.KeyEvent(kb.End+kb.Backspace+kb.Backspace+"50"),
				chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter))
			waitJS(t, ctx, `document.getElementById('status').textContent.includes('50 steps') &&
				[...document.querySelectorAll('#gallery figure.result img')].every((i) => i.complete && i.naturalWidth > 0)`)
			waitJS(t, ctx, `document.querySelector('#plot-epoch polyline') && document.getElementById('grid').complete && document.getElementById('grid').naturalWidth > 0`)
			settle(t, ctx) // on a phone: scrolled to the results
			do(t, ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
			buf := run(t, ctx, chromedp.CaptureScreenshot())
			img, err := png.Decode(bytes.NewReader(buf))
			if err != nil || img.Bounds().Dx() != int(shot.width) {
				t.Fatalf("%s: %v %v", shot.name, err, img.Bounds())
			}
			if len(buf) > 450<<10 { // the sample model's noisy colours at full size compress poorly
				t.Errorf("%s: %d KiB, over 450 KiB", shot.name, len(buf)>>10)
			}
			if err := os.WriteFile(filepath.Join(dir, shot.name), buf, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d KiB)", filepath.Join(dir, shot.name), len(buf)>>10)
		}
	})
	t.Logf("browser tests took %v", time.Since(began).Round(time.Millisecond))
}

func createEmpty(t *testing.T, path string) string {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
