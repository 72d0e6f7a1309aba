package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/trainstate"
)

// maxFieldBytes bounds a text field of the form.
const maxFieldBytes = 1 << 10

// upload is a parsed multipart request.
type upload struct {
	image  []byte
	fields map[string]string
}

// readUpload reads a multipart/form-data body: the file field "image" and
// short text fields. The body is limited to MaxUploadBytes, its first byte
// must come within FirstByteTimeout, and it must keep arriving at
// MinBodyRate on average (slowBody); an upload that stalls is answered
// 408, which frees its place.
func (s *Server) readUpload(w http.ResponseWriter, r *http.Request) (*upload, error) {
	limit := s.opts.MaxUploadBytes
	tooLarge := &apiError{status: http.StatusRequestEntityTooLarge,
		msg: fmt.Sprintf("the upload is larger than %s; choose a smaller photo", formatBytes(limit))}
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "multipart/form-data" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, msg: `send the photo as multipart/form-data with a file field "image"`}
	}
	body := newSlowBody(w, r, s.opts.FirstByteTimeout, s.opts.BodyTimeout, s.opts.MinBodyRate)
	r.Body = http.MaxBytesReader(w, struct {
		io.Reader
		io.Closer
	}{body, r.Body}, limit)
	u, err := readForm(r, tooLarge, min(r.ContentLength, limit))
	if err == nil {
		// the rest of the body (an epilogue), so that nothing is left to
		// read after the deadline is cleared
		if _, err = io.Copy(io.Discard, r.Body); err != nil {
			err = badRequest("the form could not be read: the body does not end where it should")
		}
	}
	body.finish(err == nil)
	var mbe *http.MaxBytesError
	switch {
	case body.timedOut:
		return nil, s.tooSlow()
	case errors.As(err, &mbe):
		return nil, tooLarge
	}
	return u, err
}

// readForm reads the multipart form of r: one file "image" and text fields.
// sizeHint (the body's declared length, or ≤ 0) sizes the image's buffer
// once its data flows (readFile).
func readForm(r *http.Request, tooLarge error, sizeHint int64) (*upload, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, badRequest("the form could not be read: it is not multipart/form-data with a boundary")
	}
	malformed := badRequest(`the form could not be read: the multipart body is malformed or cut short; send the photo as a file field "image"`)
	u := &upload{fields: map[string]string{}}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		if err != nil {
			return nil, malformed
		}
		name := p.FormName()
		switch {
		case name == "image":
			if u.image != nil {
				return nil, badRequest(`more than one file in field "image"; send one photo`)
			}
			u.image, err = readFile(p, sizeHint)
		case p.FileName() == "" && name != "":
			var b []byte
			b, err = io.ReadAll(io.LimitReader(p, maxFieldBytes+1))
			if len(b) > maxFieldBytes {
				return nil, badRequest("form field %q is longer than %d bytes", name, maxFieldBytes)
			}
			u.fields[name] = strings.TrimSpace(string(b))
		default:
			_, err = io.Copy(io.Discard, p) // other files: ignored
		}
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		if err != nil {
			return nil, malformed
		}
	}
	if u.image == nil {
		return nil, badRequest(`no photo: choose a PNG or JPEG file (form field "image")`)
	}
	if len(u.image) == 0 {
		return nil, badRequest("the photo is an empty file; choose a PNG or JPEG image")
	}
	return u, nil
}

// firstBuffer is the buffer an uploaded file starts with: a client that
// declares a large body and sends little holds little.
const firstBuffer = 64 << 10

// readFile reads an uploaded file. Its buffer starts at firstBuffer and,
// when that is full, takes sizeHint (the body's declared length) at once,
// so that a photo is not held twice while its buffer grows; beyond that
// (no hint, or a wrong one) it doubles.
func readFile(r io.Reader, sizeHint int64) ([]byte, error) {
	b := make([]byte, 0, firstBuffer)
	if sizeHint > 0 && sizeHint < firstBuffer {
		b = make([]byte, 0, sizeHint+bytes.MinRead)
	}
	for {
		if len(b) == cap(b) {
			c := 2 * cap(b)
			if sizeHint+bytes.MinRead > int64(cap(b)) {
				c = int(sizeHint) + bytes.MinRead
			}
			nb := make([]byte, len(b), c)
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// intField parses a required integer field within [lo, hi].
func (u *upload) intField(name string, lo, hi int) (int, error) {
	v, ok := u.fields[name]
	if !ok || v == "" {
		return 0, badRequest("%s: missing; give a whole number from %d to %d", name, lo, hi)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, badRequest("%s %q: not a whole number; give %d to %d", name, v, lo, hi)
	}
	if n < lo || n > hi {
		return 0, badRequest("%s %d: out of range; give %d to %d", name, n, lo, hi)
	}
	return n, nil
}

// photoInput turns an upload into what a colorization needs, under the
// memory budget (colorize.Fit of its BT.601 gray at its own size, upright:
// what the full-resolution results are coloured on). The peak of the whole (planDecode) is
// reserved before anything is decoded, waiting in line up to AdmitWait
// (then 503); what remains of the reservation on return is the
// luminance's bytes, which the caller gives back (release) or hands over to
// the kept results (handOver).
func (s *Server) photoInput(ctx context.Context, data []byte, size int) (*colorize.Input, *memGrant, error) {
	plan, err := s.checkUpload(data, size)
	if err != nil {
		return nil, nil, err
	}
	g, err := s.budget.reserve(ctx, plan.peak, s.opts.AdmitWait)
	switch {
	case errors.Is(err, errBudgetBusy):
		return nil, nil, &apiError{status: http.StatusServiceUnavailable, header: http.Header{"Retry-After": {"30"}},
			msg: fmt.Sprintf("busy: the photos being read or waiting take this server's memory (%d MiB) and this one needs %d MiB; try again in a minute", s.budget.max>>20, plan.peak>>20)}
	case err != nil:
		return nil, nil, err
	}
	lum, err := s.grayOf(ctx, data, plan.format)
	if err != nil {
		g.release()
		return nil, nil, err
	}
	g.shrink(plan.rest) // the decoded image is gone: return it before the next copies
	if o := plan.orientation; o >= 2 && o <= 8 {
		// the gray is turned rather than the colour image: no rotated
		// colour copy
		lum = dataset.Orient(lum, o).(*image.Gray)
	}
	in := colorize.Fit(lum, size)
	g.shrink(plan.lum) // the copies are gone: return them
	return in, g, nil
}

// grayOf decodes an upload and returns its gray as stored (not turned by
// its orientation); the decoded image is dropped on return.
func (s *Server) grayOf(ctx context.Context, data []byte, format string) (*image.Gray, error) {
	img, err := s.decodeRaw(ctx, data, format)
	if err != nil {
		return nil, err
	}
	if g, ok := img.(*image.Gray); ok && g.Rect.Min == (image.Point{}) {
		return g, nil // a gray photo is its own luminance: no copy
	}
	return toGray(img), nil
}

// checkUpload checks an uploaded PNG or JPEG by its header, before any
// pixel is decoded: its format, its pixels (MaxPixels), the decoder's
// memory (MaxDecodedBytes) and the peak memory of making a size² input of
// it (the memory budget). It returns the plan of its decoding.
func (s *Server) checkUpload(data []byte, size int) (decodePlan, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return decodePlan{}, &apiError{status: http.StatusUnsupportedMediaType, msg: "not a PNG or JPEG image, or its header is damaged; choose a photo"}
	}
	if format != "png" && format != "jpeg" {
		return decodePlan{}, &apiError{status: http.StatusUnsupportedMediaType, msg: fmt.Sprintf("%s images are not supported; choose a PNG or JPEG photo", strings.ToUpper(format))}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return decodePlan{}, badRequest("the %s image is empty (%d×%d pixels); choose another file", strings.ToUpper(format), cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > s.opts.MaxPixels {
		return decodePlan{}, &apiError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("the photo is %d×%d pixels, more than the limit of %.0f megapixels; choose a smaller one", cfg.Width, cfg.Height, float64(s.opts.MaxPixels)/1e6)}
	}
	p := planDecode(cfg, format, data, size)
	if p.decoder > s.opts.MaxDecodedBytes {
		return p, &apiError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("the photo would take %d MiB when decoded (%d×%d pixels at %.4g bytes each), more than this server's %d MiB; choose a smaller photo, or one with 8 bits per channel",
				p.decoder>>20, cfg.Width, cfg.Height, p.bpp, s.opts.MaxDecodedBytes>>20)}
	}
	if s.budget != nil && p.peak > s.budget.max {
		return p, &apiError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("reading the photo (%d×%d pixels) would take %d MiB of memory at its peak, more than this server's memory budget of %d MiB; choose a smaller photo",
				cfg.Width, cfg.Height, p.peak>>20, s.budget.max>>20)}
	}
	return p, nil
}

// decodeUpload checks and decodes an uploaded PNG or JPEG, turned upright
// by its EXIF orientation (the colour image; photoInput turns its gray).
func (s *Server) decodeUpload(ctx context.Context, data []byte) (image.Image, error) {
	p, err := s.checkUpload(data, 0)
	if err != nil {
		return nil, err
	}
	img, err := s.decodeRaw(ctx, data, p.format)
	if err != nil {
		return nil, err
	}
	return dataset.Orient(img, p.orientation), nil
}

// decodeRaw decodes a checked upload (a PNG or JPEG, format) as stored
// (not turned by its orientation), one of maxDecodes at a time. A
// decoder's panic on malformed data is an error.
func (s *Server) decodeRaw(ctx context.Context, data []byte, format string) (img image.Image, err error) {
	select {
	case s.decode <- struct{}{}:
		defer func() { <-s.decode }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				img, err = nil, fmt.Errorf("decoder failed on malformed data: %v", p)
			}
		}()
		img, _, err = image.Decode(bytes.NewReader(data))
	}()
	if err != nil {
		what := "damaged"
		if errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "not enough pixel data") {
			what = "truncated (the file ends early)"
		}
		return nil, badRequest("the %s image is damaged or truncated and cannot be read: it looks %s; choose another file", strings.ToUpper(format), what)
	}
	return img, nil
}

// pngDataURL encodes img as a data: URL.
func pngDataURL(img image.Image) string {
	var buf bytes.Buffer
	png.Encode(&buf, img) // in-memory images of our own always encode
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
}

// grayResult is the answer of POST /api/gray and part of the "start" event.
type grayResult struct {
	Checkpoint string `json:"checkpoint"`
	ImageSize  int    `json:"image_size"`
	Gray       string `json:"gray"` // data:image/png;base64,… of ImageSize²: the network's input
	// Width and Height are the photo's, upright; Frame is where it lies in
	// Gray ([x0, y0, x1, y1]); the rest of Gray mirrors it.
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Frame  [4]int `json:"frame"`
}

func newGrayResult(m *trainstate.Network, in *colorize.Input) grayResult {
	f := in.Frame
	return grayResult{Checkpoint: m.Name, ImageSize: m.ImageSize, Gray: pngDataURL(in.Gray), Width: in.Lum.Bounds().Dx(), Height: in.Lum.Bounds().Dy(),
		Frame: [4]int{f.Min.X, f.Min.Y, f.Max.X, f.Max.Y}}
}

// handleGray answers POST /api/gray (form: image, optional checkpoint) with
// the photo in gray at the checkpoint's image size, as the network will see
// it (chroma.Fit: the whole frame, its longer side at the model's size,
// mirrored into the rest of the square): {"checkpoint", "image_size",
// "gray": "data:image/png;base64,…", "width", "height", "frame"}.
func (s *Server) handleGray(w http.ResponseWriter, r *http.Request) {
	// At most maxGrayUploads are read and held at once, and one per client
	// (MaxPerClient); the rest wait for a place before their bodies are
	// read, up to AdmitWait.
	pl, err := s.uploads.enter(r.Context(), clientKey(r), s.opts.AdmitWait)
	if err != nil {
		if r.Context().Err() == nil {
			writeError(w, busy(err, s.uploads.capacity, "photos are being read", "5"))
		}
		return
	}
	defer pl.leave()
	res, err := s.gray(r.Context(), w, r)
	if err != nil {
		s.logError(r, err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) gray(ctx context.Context, w http.ResponseWriter, r *http.Request) (*grayResult, error) {
	u, err := s.readUpload(w, r)
	if err != nil {
		return nil, err
	}
	m, err := s.models.get(ctx, u.fields["checkpoint"])
	if err != nil {
		return nil, err
	}
	in, g, err := s.photoInput(ctx, u.image, m.ImageSize)
	if err != nil {
		return nil, err
	}
	defer g.release()
	res := newGrayResult(m, in)
	return &res, nil
}

// Events of POST /api/colorize's stream, each "event: NAME\ndata: JSON\n\n".
type (
	queuedEvent struct {
		Ahead int `json:"ahead"` // how many colorizations are before this one, the running one included
		// Wait estimates the seconds until this one runs, from how long the
		// recent colorizations took (jobTimes); absent before the first.
		Wait *float64 `json:"wait_seconds,omitempty"`
	}
	startEvent struct {
		grayResult
		Epoch   int    `json:"epoch"`
		Steps   int    `json:"steps"`
		Samples int    `json:"samples"`
		Seed    uint64 `json:"seed,string"`
	}
	progressEvent struct {
		Step  int `json:"step"`
		Steps int `json:"steps"`
	}
	previewEvent struct {
		Step  int    `json:"step"`
		Image string `json:"image"` // data:image/png;base64,… of the first sample's current x̂0, the frame only
	}
	doneEvent struct {
		// Images are the model-size samples of the photo's frame (e.g.
		// 128×85 for a 3:2 photo), data:image/png;base64,…
		Images []string `json:"images"`
		// Full are the URLs of the same samples at the photo's own size
		// (Width×Height), coloured on its luminance (GET them: PNG).
		Full    []string `json:"full"`
		Width   int      `json:"width"`
		Height  int      `json:"height"`
		Seconds float64  `json:"seconds"`
	}
	errorEvent struct {
		Error string `json:"error"`
	}
)

// handleColorize answers POST /api/colorize. The form has the file "image"
// and the fields "steps" (10–100), "samples" (1–8), and optionally
// "checkpoint" (a name from /api/checkpoints; default the newest) and "seed"
// (default random; the same seed, checkpoint, photo and steps give the same
// colours).
//
// Everything that can be wrong with the request is answered with a 4xx
// before streaming starts, and a full queue with 503. Then the answer is a
// text/event-stream of events: "queued" {"ahead"} while waiting for the
// colorization in front to finish, "start" {"checkpoint", "epoch",
// "image_size", "gray", "steps", "samples", "seed"}, "progress" {"step",
// "steps"} after each diffusion step, "preview" {"step", "image"} about ten
// times per colorization, and finally "done" {"images",
// "seconds"} or "error" {"error"}.
func (s *Server) handleColorize(w http.ResponseWriter, r *http.Request) {
	err := s.colorize(w, r)
	if s.finished != nil {
		s.finished(err)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.logError(r, err)
	}
}

// colorize does handleColorize's work. It writes the error itself when the
// stream has started, and returns it for logging.
func (s *Server) colorize(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	fail := func(err error) error { writeError(w, err); return err }
	// Admission comes before the upload is read, so the queue also bounds
	// how many uploads (up to MaxBytes each) are held in memory at once. A
	// request waits for a place, first come first served, up to AdmitWait,
	// and a client has at most MaxPerClient uploading or queued.
	pl, err := s.queue.places.enter(ctx, clientKey(r), s.opts.AdmitWait)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fail(busy(err, s.queue.capacity(), "colorizations are running or waiting", "30"))
	}
	defer pl.leave()
	u, err := s.readUpload(w, r)
	if err != nil {
		return fail(err)
	}
	steps, err := u.intField("steps", colorize.MinSteps, colorize.MaxSteps)
	if err != nil {
		return fail(err)
	}
	samples, err := u.intField("samples", colorize.MinSamples, colorize.MaxSamples)
	if err != nil {
		return fail(err)
	}
	seed := rand.Uint64()
	if v := u.fields["seed"]; v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			return fail(badRequest("seed %q: not a whole number from 0 to 2^64−1; leave it empty for a random one", v))
		}
	}
	m, err := s.models.get(ctx, u.fields["checkpoint"])
	if err != nil {
		return fail(err)
	}
	in, mem, err := s.photoInput(ctx, u.image, m.ImageSize)
	if err != nil {
		return fail(err)
	}
	defer mem.release() // the luminance's bytes, unless handed over to the kept results

	// From here on the answer is a stream.
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // for a proxy in front
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event string, v any) {
		data, _ := json.Marshal(v)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
		rc.Flush() // a client gone away shows up as ctx being done
	}
	streamErr := func(err error) error {
		msg := err.Error()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			msg = "cancelled"
		}
		send("error", errorEvent{Error: msg})
		return err
	}

	if err := s.queue.run(ctx, func(ahead int) { send("queued", queuedEvent{Ahead: ahead, Wait: s.jobs.wait(ahead)}) }); err != nil {
		return streamErr(err)
	}
	defer s.queue.done()
	pl.unclaim() // running: the client may send its next one
	job := s.jobs.start()
	defer job.end()
	send("start", startEvent{grayResult: newGrayResult(m, in), Epoch: m.Epoch, Steps: steps, Samples: samples, Seed: seed})

	pipe, err := s.models.pipeline(m, samples)
	if err != nil {
		return streamErr(err)
	}
	// a preview of the first sample about ten times per colorization (a
	// PNG of ImageSize² costs well under a diffusion step)
	pipe.SetPreview(max(1, steps/10), func(step int, x0 *image.RGBA) {
		send("preview", previewEvent{Step: step, Image: pngDataURL(x0.SubImage(in.Frame))})
	})
	defer pipe.SetPreview(0, nil)
	start := time.Now()
	res, err := pipe.Photo(ctx, in, samples, steps, seed,
		func(step, steps int) {
			send("progress", progressEvent{Step: step, Steps: steps})
			if s.progress != nil {
				s.progress(ctx, step, steps)
			}
		})
	if err != nil {
		return streamErr(err)
	}
	done := doneEvent{Seconds: time.Since(start).Seconds(), Width: in.Lum.Bounds().Dx(), Height: in.Lum.Bounds().Dy()}
	for k := range samples {
		done.Images = append(done.Images, pngDataURL(res.Small(k)))
	}
	id := s.results.add(&result{Result: res})
	mem.handOver() // the luminance is the kept result's now, counted by the budget as such
	for k := range samples {
		done.Full = append(done.Full, resultURL(id, k))
	}
	job.done()
	send("done", done)
	return nil
}

// busy is the 503 answer to a request that got no place (places.enter's
// error): its client's share is in use, or every one of the n places.
func busy(err error, n int, what, retry string) *apiError {
	h := http.Header{"Retry-After": {retry}}
	if errors.Is(err, errClientBusy) {
		return &apiError{status: http.StatusServiceUnavailable, header: h,
			msg: "busy: your earlier request is still being read or waiting in the queue (a client may have one at a time); try again when it is done"}
	}
	return &apiError{status: http.StatusServiceUnavailable, header: h,
		msg: fmt.Sprintf("busy: %d %s, the most this server takes at once; try again in a minute", n, what)}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
