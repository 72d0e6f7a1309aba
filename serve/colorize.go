package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tinct/tinct/chroma"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/track"
)

// Ranges of the colorization's form fields (as tinct colorize's flags).
const (
	MinSteps, MaxSteps     = 10, 100
	MinSamples, MaxSamples = 1, 8
)

// maxFieldBytes bounds a text field of the form.
const maxFieldBytes = 1 << 10

// upload is a parsed multipart request.
type upload struct {
	image  []byte
	fields map[string]string
}

// readUpload reads a multipart/form-data body: the file field "image" and
// short text fields. The body is limited to MaxUploadBytes and must arrive
// at MinBodyRate after a grace of BodyTimeout (slowBody); an upload that
// stalls is answered 408, which frees its place.
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
	body := newSlowBody(w, r, s.opts.BodyTimeout, s.opts.MinBodyRate)
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
// sizeHint (the body's declared length, or ≤ 0) sizes the image's buffer at
// once, so that reading it does not hold a half-size copy besides.
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
			var buf bytes.Buffer
			if sizeHint > 0 {
				buf.Grow(int(sizeHint) + bytes.MinRead) // ReadFrom wants MinRead free at the end
			}
			_, err = buf.ReadFrom(p)
			u.image = buf.Bytes()
			if u.image == nil {
				u.image = []byte{}
			}
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

// luminance decodes an upload (decodeUpload) and returns its BT.601 gray
// at the photo's own size: what the network's input is made from and what
// the full-resolution results are coloured on.
func (s *Server) luminance(ctx context.Context, data []byte) (*image.Gray, error) {
	img, err := s.decodeUpload(ctx, data)
	if err != nil {
		return nil, err
	}
	if g, ok := img.(*image.Gray); ok && g.Rect.Min == (image.Point{}) {
		return g, nil // a gray photo is its own luminance: no copy
	}
	return dataset.ToGray(img), nil
}

// decodeUpload checks and decodes an uploaded PNG or JPEG, turned upright
// by its EXIF orientation.
func (s *Server) decodeUpload(ctx context.Context, data []byte) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, msg: "not a PNG or JPEG image, or its header is damaged; choose a photo"}
	}
	if format != "png" && format != "jpeg" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, msg: fmt.Sprintf("%s images are not supported; choose a PNG or JPEG photo", strings.ToUpper(format))}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, badRequest("the %s image is empty (%d×%d pixels); choose another file", strings.ToUpper(format), cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > s.opts.MaxPixels {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("the photo is %d×%d pixels, more than the limit of %.0f megapixels; choose a smaller one", cfg.Width, cfg.Height, float64(s.opts.MaxPixels)/1e6)}
	}
	if n, bpp := decodedBytes(cfg, format, data); n > s.opts.MaxDecodedBytes {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("the photo would take %d MiB when decoded (%d×%d pixels at %.4g bytes each), more than this server's %d MiB; choose a smaller photo, or one with 8 bits per channel",
				n>>20, cfg.Width, cfg.Height, bpp, s.opts.MaxDecodedBytes>>20)}
	}
	select {
	case s.decode <- struct{}{}:
		defer func() { <-s.decode }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	img, err := dataset.DecodeBytes(data)
	if err != nil {
		what := "damaged"
		if errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "not enough pixel data") {
			what = "truncated (the file ends early)"
		}
		return nil, badRequest("the %s image is damaged or truncated and cannot be read: it looks %s; choose another file", strings.ToUpper(format), what)
	}
	return img, nil
}

// decodedBytes estimates the memory decoding takes: width × height × bytes
// per pixel of the image the decoder allocates (by its colour model), plus
// what the decoder keeps besides: a progressive JPEG's DCT coefficients
// (two bytes per pixel and component), an interlaced PNG's largest pass
// (half the image). It returns the total and the bytes per pixel.
func decodedBytes(cfg image.Config, format string, data []byte) (int64, float64) {
	var bpp float64
	switch cfg.ColorModel {
	case color.GrayModel, color.AlphaModel:
		bpp = 1
	case color.Gray16Model, color.Alpha16Model:
		bpp = 2
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		bpp = 4
	case color.YCbCrModel:
		bpp = 3 // 4:4:4 at most
	default:
		if _, ok := cfg.ColorModel.(color.Palette); ok {
			bpp = 1
		} else {
			bpp = 8 // RGBA64, NRGBA64 and anything unknown
		}
	}
	switch {
	case format == "jpeg" && dataset.ProgressiveJPEG(data):
		bpp *= 3 // + 2 bytes per sample of coefficients
	case format == "png" && len(data) > 28 && data[28] == 1: // IHDR interlace method Adam7
		bpp *= 1.5
	}
	return int64(float64(cfg.Width) * float64(cfg.Height) * bpp), bpp
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

func newGrayResult(m *Model, lum, in *image.Gray, frame image.Rectangle) grayResult {
	return grayResult{Checkpoint: m.Name, ImageSize: m.ImageSize, Gray: pngDataURL(in), Width: lum.Bounds().Dx(), Height: lum.Bounds().Dy(),
		Frame: [4]int{frame.Min.X, frame.Min.Y, frame.Max.X, frame.Max.Y}}
}

// handleGray answers POST /api/gray (form: image, optional checkpoint) with
// the photo in gray at the checkpoint's image size, as the network will see
// it (chroma.Fit: the whole frame, its longer side at the model's size,
// mirrored into the rest of the square): {"checkpoint", "image_size",
// "gray": "data:image/png;base64,…", "width", "height", "frame"}.
func (s *Server) handleGray(w http.ResponseWriter, r *http.Request) {
	// At most maxGrayUploads are read and held at once; the rest are
	// refused before their bodies are read.
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	default:
		writeError(w, &apiError{status: http.StatusServiceUnavailable, header: http.Header{"Retry-After": {"5"}},
			msg: fmt.Sprintf("busy: %d photos are being read, the most this server takes at once; try again in a few seconds", maxGrayUploads)})
		return
	}
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
	lum, err := s.luminance(ctx, u.image)
	if err != nil {
		return nil, err
	}
	in, frame := chroma.Fit(lum, m.ImageSize)
	res := newGrayResult(m, lum, in, frame)
	return &res, nil
}

// Events of POST /api/colorize's stream, each "event: NAME\ndata: JSON\n\n".
type (
	queuedEvent struct {
		Ahead int `json:"ahead"` // how many colorizations are before this one, the running one included
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
	// how many uploads (up to MaxBytes each) are held in memory at once.
	if !s.queue.admit() {
		return fail(&apiError{status: http.StatusServiceUnavailable, header: http.Header{"Retry-After": {"30"}},
			msg: fmt.Sprintf("busy: %d colorizations are running or waiting, the most this server takes; try again in a minute", s.queue.capacity())})
	}
	defer s.queue.leave()
	u, err := s.readUpload(w, r)
	if err != nil {
		return fail(err)
	}
	steps, err := u.intField("steps", MinSteps, MaxSteps)
	if err != nil {
		return fail(err)
	}
	samples, err := u.intField("samples", MinSamples, MaxSamples)
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
	lum, err := s.luminance(ctx, u.image)
	if err != nil {
		return fail(err)
	}
	size := m.ImageSize
	g, frame := chroma.Fit(lum, size)

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

	if err := s.queue.run(ctx, func(ahead int) { send("queued", queuedEvent{Ahead: ahead}) }); err != nil {
		return streamErr(err)
	}
	defer s.queue.done()
	send("start", startEvent{grayResult: newGrayResult(m, lum, g, frame), Epoch: m.Epoch, Steps: steps, Samples: samples, Seed: seed})

	gray := make([]float32, size*size)
	for i, v := range g.Pix[:size*size] {
		gray[i] = model.PixelToUnit(v)
	}
	sampler, err := s.models.sampler(m, samples)
	if err != nil {
		return streamErr(err)
	}
	// a preview of the first sample about ten times per colorization (a
	// PNG of ImageSize² costs well under a diffusion step)
	sampler.SetPreview(max(1, steps/10), func(step int, x0 nn.Tensor) {
		send("preview", previewEvent{Step: step, Image: pngDataURL(subImage(track.ToImage(x0.Image(0), 3, size, size), frame))})
	})
	defer sampler.SetPreview(0, nil)
	start := time.Now()
	out, err := sampler.Colorize(ctx, nn.TensorFrom(gray, 1, 1, size, size), samples, steps, rand.New(rand.NewPCG(seed, 0)),
		func(step, steps int) {
			send("progress", progressEvent{Step: step, Steps: steps})
			if s.progress != nil {
				s.progress(ctx, step, steps)
			}
		})
	if err != nil {
		return streamErr(err)
	}
	done := doneEvent{Seconds: time.Since(start).Seconds(), Width: lum.Bounds().Dx(), Height: lum.Bounds().Dy()}
	res := &result{lum: lum, content: frame}
	for k := range samples {
		img := track.ToImage(out.Image(k), 3, size, size).(*image.RGBA)
		res.samples = append(res.samples, img)
		done.Images = append(done.Images, pngDataURL(img.SubImage(frame)))
	}
	id := s.results.add(res)
	for k := range samples {
		done.Full = append(done.Full, resultURL(id, k))
	}
	send("done", done)
	return nil
}

// subImage returns the part of img inside r.
func subImage(img image.Image, r image.Rectangle) image.Image {
	return img.(interface {
		SubImage(image.Rectangle) image.Image
	}).SubImage(r)
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
