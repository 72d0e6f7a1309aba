package serve

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/gif"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tinct/tinct/internal/fuzzcheck"
)

// The limits of the fuzz targets' server: small, so that the fuzzer can
// reach them.
const (
	fuzzMaxPixels      = 64 * 64
	fuzzMaxUploadBytes = 2048
)

// fuzzServer is a Server with just what grayImage and readUpload use.
func fuzzServer() *Server {
	return &Server{opts: Options{MaxPixels: fuzzMaxPixels, MaxUploadBytes: fuzzMaxUploadBytes, MaxDecodedBytes: DefaultMaxDecodedBytes}, decode: make(chan struct{}, maxDecodes)}
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// formSeed is form's body and its boundary.
func formSeed(t testing.TB, file []byte, fields ...string) ([]byte, string) {
	t.Helper()
	body, ct := form(t, file, fields...)
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		t.Fatal(err)
	}
	return body, params["boundary"]
}

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	png := encodePNG(t, photo(24, 16))
	jpg := encodeJPEG(t, photo(16, 24))
	var g bytes.Buffer
	if err := gif.Encode(&g, photo(8, 8), nil); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"png":            png,
		"jpeg":           jpg,
		"gray-png":       encodePNG(t, image.NewGray(image.Rect(0, 0, 3, 1))),
		"png-over-limit": encodePNG(t, photo(65, 64)),
		"png-bomb":       hugePNG(t, 100_000, 100_000),
		"png-truncated":  png[:len(png)/2],
		"jpeg-truncated": jpg[:len(jpg)-40],
		"gif":            g.Bytes(),
		"not-an-image":   []byte("just text, not an image"),
	} {
		fuzzcheck.WriteSeed(t, "FuzzGrayImage", name, data)
	}

	small := encodePNG(t, image.NewGray(image.Rect(0, 0, 2, 2)))
	for name, seed := range map[string]struct {
		file   []byte
		fields []string
		cut    int
	}{
		"upload":      {small, []string{"steps", "20", "samples", "2"}, 0},
		"no-photo":    {nil, []string{"steps", "20"}, 0},
		"empty-photo": {[]byte{}, nil, 0},
		"too-large":   {bytes.Repeat([]byte{7}, fuzzMaxUploadBytes), nil, 0},
		"long-field":  {small, []string{"steps", strings.Repeat("9", maxFieldBytes+1)}, 0},
		"truncated":   {small, []string{"steps", "20"}, 40},
		"photo-only":  {small, nil, 0},
	} {
		body, boundary := formSeed(t, seed.file, seed.fields...)
		if seed.cut > 0 {
			body = body[:len(body)-seed.cut]
		}
		fuzzcheck.WriteSeed(t, "FuzzReadUpload", name, body, boundary, true)
	}
	body, boundary := formSeed(t, small)
	two := append([]byte(nil), body[:len(body)-len(boundary)-6]...) // without the closing delimiter
	two = append(two, []byte("\r\n--"+boundary+"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"b.png\"\r\n\r\nxyz\r\n--"+boundary+"--\r\n")...)
	fuzzcheck.WriteSeed(t, "FuzzReadUpload", "two-photos", two, boundary, true)
	fuzzcheck.WriteSeed(t, "FuzzReadUpload", "chunked", body, boundary, false)
}

// statusOf returns the HTTP status of an *apiError, or fails.
func statusOf(t *testing.T, err error) int {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) {
		t.Fatalf("error is not an *apiError: %v", err)
	}
	return ae.status
}

// FuzzGrayImage feeds arbitrary bytes to decodeUpload, which checks and
// decodes an upload, on a server that takes at most fuzzMaxPixels pixels.
// It must answer with an API error (415 for what is not a PNG or JPEG, 413
// exactly when the header declares more pixels than the limit, 400 for a
// damaged or empty image) or with the image the header declares (upright:
// an EXIF rotation may swap its sides), and never allocate more than such
// an image's decoding takes, whatever size the header declares.
func FuzzGrayImage(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add(encodePNG(f, photo(4, 4)))
	f.Add(encodeJPEG(f, photo(8, 8)))
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			img image.Image
			err error
		)
		n := fuzzcheck.AllocatedBytes(func() { img, err = s.decodeUpload(context.Background(), data) })
		if limit := 16*uint64(len(data)) + 200*fuzzMaxPixels + 4<<20; n > limit {
			t.Fatalf("decodeUpload of %d bytes allocated %d bytes", len(data), n)
		}
		cfg, format, cerr := image.DecodeConfig(bytes.NewReader(data))
		declared := int64(cfg.Width) * int64(cfg.Height)
		if err != nil {
			switch st := statusOf(t, err); {
			case st == http.StatusRequestEntityTooLarge:
				if cerr != nil || declared <= fuzzMaxPixels {
					t.Fatalf("413 for an image declaring %d×%d (%v)", cfg.Width, cfg.Height, cerr)
				}
			case st == http.StatusUnsupportedMediaType:
				if cerr == nil && (format == "png" || format == "jpeg") {
					t.Fatalf("415 for a %s: %v", format, err)
				}
			case st == http.StatusBadRequest:
				if cerr != nil || declared > fuzzMaxPixels {
					t.Fatalf("400 for what is not a decodable %s within the limit: %v", format, err)
				}
			default:
				t.Fatalf("status %d: %v", st, err)
			}
			return
		}
		if cerr != nil || format != "png" && format != "jpeg" || cfg.Width <= 0 || cfg.Height <= 0 || declared > fuzzMaxPixels {
			t.Fatalf("accepted a %q of %d×%d (%v)", format, cfg.Width, cfg.Height, cerr)
		}
		if b := img.Bounds(); !(b.Dx() == cfg.Width && b.Dy() == cfg.Height) && !(b.Dx() == cfg.Height && b.Dy() == cfg.Width) {
			t.Fatalf("decoded %v; the header declares %d×%d", b, cfg.Width, cfg.Height)
		}
	})
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzReadUpload reads an arbitrary body as the multipart form of a
// colorization, with the given boundary and with or without a
// Content-Length, on a server that takes fuzzMaxUploadBytes. It must never
// read more of the body than the limit (and one byte to see that it is
// over), answer errors as API errors (400, 413 or 415), and accept only a
// form with exactly one non-empty photo, short fields and everything within
// the limit — the photo being the bytes of the body's "image" part.
func FuzzReadUpload(f *testing.F) {
	f.Add([]byte(""), "b", true)
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nPNG\r\n--b--\r\n"), "b", true)
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"steps\"\r\n\r\n10\r\n--b--\r\n"), "b", false)
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte, boundary string, declareLength bool) {
		cr := &countingReader{r: bytes.NewReader(body)}
		req := httptest.NewRequest("POST", "/api/colorize", cr)
		req.Header.Set("Content-Type", mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary}))
		if declareLength {
			req.ContentLength = int64(len(body))
		} else {
			req.ContentLength = -1
		}
		u, err := s.readUpload(httptest.NewRecorder(), req)
		if cr.n > fuzzMaxUploadBytes+1 {
			t.Fatalf("read %d bytes of a body limited to %d", cr.n, fuzzMaxUploadBytes)
		}
		if err != nil {
			if st := statusOf(t, err); st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge && st != http.StatusUnsupportedMediaType {
				t.Fatalf("status %d: %v", st, err)
			}
			return
		}
		if declareLength && len(body) > fuzzMaxUploadBytes {
			t.Fatalf("accepted a body of %d bytes declared, over the limit", len(body))
		}
		total := len(u.image)
		for name, v := range u.fields {
			if len(v) > maxFieldBytes {
				t.Fatalf("field %q of %d bytes", name, len(v))
			}
			total += len(v)
		}
		if len(u.image) == 0 || total > fuzzMaxUploadBytes {
			t.Fatalf("accepted a photo of %d bytes, %d bytes in all", len(u.image), total)
		}

		// The photo is the first "image" part of the body as mime/multipart
		// reads it.
		mr := multipart.NewReader(bytes.NewReader(body), boundary)
		for {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatalf("accepted a photo, but the body has no image part: %v", err)
			}
			if p.FormName() != "image" {
				continue
			}
			want, err := io.ReadAll(p)
			if err != nil || !bytes.Equal(want, u.image) {
				t.Fatalf("photo of %d bytes, but the image part holds %d (%v)", len(u.image), len(want), err)
			}
			break
		}
	})
}
