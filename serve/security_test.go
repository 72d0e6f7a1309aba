package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/checkpoint"
)

// stalledUpload opens a connection to ts, sends the headers of a multipart
// POST to path that declares a body of a megabyte, and the first part's
// header, then nothing more: the shape of a slow-body attack. The
// connection is closed when the test ends.
func stalledUpload(t *testing.T, serverURL, path string) net.Conn {
	t.Helper()
	u, _ := url.Parse(serverURL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 1000000\r\n\r\n", path, u.Host)
	fmt.Fprint(conn, "--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG")
	return conn
}

// readAnswer reads the HTTP answer on conn. The deadline only keeps a
// server that never answers from hanging the test.
func readAnswer(t *testing.T, conn net.Conn) (int, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the stalled upload: %v", err)
	}
	defer res.Body.Close()
	var e struct{ Error string }
	json.NewDecoder(res.Body).Decode(&e)
	return res.StatusCode, e.Error
}

// TestSlowBody: an upload whose body stops (or trickles) is cut off after
// the body deadline with 408, and its queue place is freed, so the next
// person can colorize.
func TestSlowBody(t *testing.T) {
	s, ts := newTestServer(t, Options{Queue: 0, BodyTimeout: 300 * time.Millisecond, MinBodyRate: 1 << 20})
	good, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
	for _, path := range []string{"/api/colorize", "/api/gray"} {
		t.Run("stalled"+path, func(t *testing.T) {
			conn := stalledUpload(t, ts.URL, path)
			status, msg := readAnswer(t, conn)
			if status != http.StatusRequestTimeout || !strings.Contains(msg, "too slowly") {
				t.Errorf("stalled upload: %d %q, want 408 saying it arrived too slowly", status, msg)
			}
			if path == "/api/colorize" {
				if r := readStream(t, post(t, context.Background(), ts.URL+path, good, ct)); r.done == nil {
					t.Errorf("colorize after a stalled upload: %v", r.order)
				}
			}
		})
	}
	t.Run("trickle", func(t *testing.T) {
		conn := stalledUpload(t, ts.URL, "/api/colorize")
		stop := make(chan struct{})
		defer close(stop)
		go func() { // a byte every 10 ms: alive, but far below the minimum rate
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
					if _, err := conn.Write([]byte{0}); err != nil {
						return
					}
				}
			}
		}()
		status, msg := readAnswer(t, conn)
		if status != http.StatusRequestTimeout || !strings.Contains(msg, "too slowly") {
			t.Errorf("trickling upload: %d %q, want 408", status, msg)
		}
		if r := readStream(t, post(t, context.Background(), ts.URL+"/api/colorize", good, ct)); r.done == nil {
			t.Errorf("colorize after a trickling upload: %v", r.order)
		}
	})
	if n, _ := s.queue.places.inUse(); n != 0 {
		t.Errorf("%d queue places still held", n)
	}
}

// hugePNG16 is hugePNG with 16-bit RGBA pixels declared (8 bytes each when
// decoded).
func hugePNG16(t testing.TB, w, h uint32) []byte {
	b := hugePNG(t, w, h)
	b[24], b[25] = 16, 6 // bit depth, colour type RGBA
	v := crc32.ChecksumIEEE(b[12:29])
	b[29], b[30], b[31], b[32] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return b
}

// TestDecodedBytesLimit: the decoded size (width × height × bytes per
// pixel) is bounded before decoding, not only the pixel count: a 7000×7000
// 16-bit RGBA PNG (392 MB decoded, 49 megapixels) is refused.
func TestDecodedBytesLimit(t *testing.T) {
	_, ts := newTestServer(t, Options{})
	for _, endpoint := range []string{"/api/gray", "/api/colorize"} {
		body, ct := form(t, hugePNG16(t, 7000, 7000), "steps", "10", "samples", "1")
		res := post(t, context.Background(), ts.URL+endpoint, body, ct)
		if msg := apiErr(t, res); res.StatusCode != 413 || !strings.Contains(msg, "MiB when decoded") {
			t.Errorf("%s: 16-bit 7000×7000: %d %q, want 413 about the decoded size", endpoint, res.StatusCode, msg)
		}
		// 8-bit gray of the same size (49 MB) passes the check (and is
		// then found truncated: only its header is real).
		body, ct = form(t, hugePNG(t, 7000, 7000), "steps", "10", "samples", "1")
		res = post(t, context.Background(), ts.URL+endpoint, body, ct)
		if msg := apiErr(t, res); res.StatusCode != 400 {
			t.Errorf("%s: 8-bit gray 7000×7000: %d %q, want 400 (truncated)", endpoint, res.StatusCode, msg)
		}
	}
}

// TestGrayUploadsBounded: /api/gray holds at most maxGrayUploads uploads at
// once; beyond that (here without waiting for a place, AdmitWait < 0, and
// without a limit per client) it answers 503 instead of reading more
// bodies into memory.
func TestGrayUploadsBounded(t *testing.T) {
	s, ts := newTestServer(t, Options{BodyTimeout: time.Minute, FirstByteTimeout: time.Minute, AdmitWait: -1, MaxPerClient: -1})
	held := func() int { n, _ := s.uploads.inUse(); return n }
	var conns []net.Conn
	for range maxGrayUploads {
		conns = append(conns, stalledUpload(t, ts.URL, "/api/gray"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for held() < maxGrayUploads {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d stalled uploads hold a place", held(), maxGrayUploads)
		}
		time.Sleep(5 * time.Millisecond)
	}
	body, ct := form(t, encodePNG(t, photo(20, 20)))
	res := post(t, context.Background(), ts.URL+"/api/gray", body, ct)
	if msg := apiErr(t, res); res.StatusCode != 503 || !strings.Contains(msg, "busy") || res.Header.Get("Retry-After") == "" {
		t.Errorf("gray with %d uploads held: %d %q", maxGrayUploads, res.StatusCode, msg)
	}
	for _, c := range conns {
		c.Close()
	}
	for held() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d places still held after the uploads went away", held())
		}
		time.Sleep(5 * time.Millisecond)
	}
	res = post(t, context.Background(), ts.URL+"/api/gray", body, ct)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("gray after the uploads went away: %d", res.StatusCode)
	}
}

// TestTokenScheme: the Authorization header's scheme is case-insensitive
// (RFC 9110, 11.1: "bearer", "BEARER" are Bearer) and may be followed by
// more than one space; another scheme, a wrong token or a scheme without a
// space is refused.
func TestTokenScheme(t *testing.T) {
	const token = "correct-horse-battery-staple"
	_, ts := newTestServer(t, Options{Token: token})
	for h, want := range map[string]int{
		"Bearer " + token:    200,
		"bearer " + token:    200,
		"BEARER " + token:    200,
		"beaRer   " + token:  200,
		"Bearer\t" + token:   401, // the scheme ends at a space (SP)
		"bearer wrong-token": 401,
		"Basic " + token:     401,
		"Bearer" + token:     401,
		"bearer":             401,
		token:                401,
	} {
		res := request(t, "GET", ts.URL+"/api/limits", nil, "Authorization", h)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("Authorization: %q: %d, want %d", strings.ReplaceAll(h, token, "TOKEN"), res.StatusCode, want)
		}
	}
}

// request sends a request with the given headers (Host among them).
func request(t *testing.T, method, u string, body []byte, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCrossSite: state-changing requests from another origin, and any
// request addressed to a host name that is not a loopback one (DNS
// rebinding), are refused before anything is read or run.
func TestCrossSite(t *testing.T) {
	s, ts := newTestServer(t, Options{})
	var started int
	s.finished = func(error) { started++ }
	body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
	for _, c := range []struct {
		name    string
		path    string
		headers []string
		status  int
		msg     string
	}{
		{"another origin", "/api/colorize", []string{"Origin", "http://evil.example"}, 403, "another site"},
		{"another port", "/api/colorize", []string{"Origin", "http://127.0.0.1:1"}, 403, "another site"},
		{"origin null", "/api/gray", []string{"Origin", "null"}, 403, "another site"},
		{"cross-site fetch without Origin", "/api/colorize", []string{"Sec-Fetch-Site", "cross-site"}, 403, "another site"},
		{"DNS rebinding", "/api/colorize", []string{"Host", "evil.example:7860", "Origin", "http://evil.example:7860"}, 403, "127.0.0.1"},
		{"DNS rebinding, GET", "/api/checkpoints", []string{"Host", "evil.example:7860"}, 403, "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(c.path, "/api/checkpoints") {
				method = "GET"
			}
			res := request(t, method, ts.URL+c.path, body, append([]string{"Content-Type", ct}, c.headers...)...)
			if msg := apiErr(t, res); res.StatusCode != c.status || !strings.Contains(msg, c.msg) {
				t.Errorf("%d %q, want %d with %q", res.StatusCode, msg, c.status, c.msg)
			}
		})
	}
	if started != 0 {
		t.Errorf("%d refused requests reached the colorizer", started)
	}
	// The page's own origin, and clients that send no Origin (curl), pass.
	// behind a proxy that rewrites Host but says which host it was asked for
	// (a cross-site page cannot set X-Forwarded-Host without a preflight)
	behindProxy := []string{"Origin", "https://tinct.example.org", "X-Forwarded-Host", "tinct.example.org", "Sec-Fetch-Site", "same-origin"}
	for _, h := range [][]string{{"Origin", ts.URL, "Sec-Fetch-Site", "same-origin"}, {"Host", "localhost:7860"}, behindProxy, {}} {
		res := request(t, "POST", ts.URL+"/api/colorize", body, append([]string{"Content-Type", ct}, h...)...)
		if r := readStream(t, res); r.done == nil {
			t.Errorf("%v: %v", h, r.order)
		}
	}
}

// TestToken: with a token, every API request needs it (bearer header or the
// session cookie from /api/login), from any host name; the page itself and
// its assets do not.
func TestToken(t *testing.T) {
	const token = "correct-horse-battery-staple"
	outputs := t.TempDir()
	fakeRun(t, filepath.Join(outputs, "run"), 1, 2)
	_, ts := newTestServer(t, Options{Token: token, OutputsDir: outputs})
	for _, p := range []string{"/api/checkpoints", "/api/limits", "/api/run", "/api/cluster", "/run/images/samples-00000001.png"} {
		res := request(t, "GET", ts.URL+p, nil)
		if msg := apiErr(t, res); res.StatusCode != 401 || !strings.Contains(msg, "token") {
			t.Errorf("GET %s without the token: %d %q", p, res.StatusCode, msg)
		}
		res = request(t, "GET", ts.URL+p, nil, "Authorization", "Bearer wrong-"+token)
		if msg := apiErr(t, res); res.StatusCode != 401 {
			t.Errorf("GET %s with a wrong token: %d %q", p, res.StatusCode, msg)
		}
		res = request(t, "GET", ts.URL+p, nil, "Authorization", "Bearer "+token, "Host", "tinct.example.org")
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s with the token: %d", p, res.StatusCode)
		}
	}
	for _, p := range []string{"/", "/static/app.js"} {
		res := request(t, "GET", ts.URL+p, nil, "Host", "tinct.example.org")
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, res.StatusCode)
		}
	}
	body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
	res := request(t, "POST", ts.URL+"/api/colorize", body, "Content-Type", ct)
	if msg := apiErr(t, res); res.StatusCode != 401 {
		t.Errorf("colorize without the token: %d %q", res.StatusCode, msg)
	}

	// Log in: a session cookie (HttpOnly, SameSite=Strict) that does not
	// hold the token itself.
	res = request(t, "POST", ts.URL+"/api/login", []byte(`{"token":"nope"}`), "Content-Type", "application/json")
	if msg := apiErr(t, res); res.StatusCode != 401 || len(res.Cookies()) != 0 {
		t.Errorf("login with a wrong token: %d %q %v", res.StatusCode, msg, res.Cookies())
	}
	res = request(t, "POST", ts.URL+"/api/login", []byte(`{"token":"`+token+`"}`), "Content-Type", "application/json")
	res.Body.Close()
	cookies := res.Cookies()
	if res.StatusCode != 204 || len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode || strings.Contains(cookies[0].Value, token) {
		t.Fatalf("login: %d %+v", res.StatusCode, cookies)
	}
	res = request(t, "POST", ts.URL+"/api/colorize", body, "Content-Type", ct, "Cookie", cookies[0].Name+"="+cookies[0].Value)
	if r := readStream(t, res); r.done == nil {
		t.Errorf("colorize with the session cookie: %v", r.order)
	}
	// Even with the cookie, another origin is refused.
	res = request(t, "POST", ts.URL+"/api/colorize", body, "Content-Type", ct, "Cookie", cookies[0].Name+"="+cookies[0].Value, "Origin", "http://evil.example")
	if msg := apiErr(t, res); res.StatusCode != 403 {
		t.Errorf("cross-site with the cookie: %d %q", res.StatusCode, msg)
	}
	if _, err := New(Options{Token: "short"}); err == nil || !strings.Contains(err.Error(), "16") {
		t.Errorf("a 5-character token: %v", err)
	}
}

// leaks lists what an answer must not show: server paths and the texts of
// Go's errors.
func checkNoLeak(t *testing.T, what, body string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if p != "" && strings.Contains(body, p) {
			t.Errorf("%s shows the server path %s: %s", what, p, body)
		}
	}
	for _, s := range []string{"file://", "unexpected EOF", "image: unknown format", "invalid format", "multipart:", "no such file", "open /", "read /", "safetensors:"} {
		if strings.Contains(body, s) {
			t.Errorf("%s shows internals (%q): %s", what, s, body)
		}
	}
}

// TestNoInternals: answers name the store, runs and problems without the
// server's absolute paths or Go's error texts.
func TestNoInternals(t *testing.T) {
	root := t.TempDir()
	storeDir := filepath.Join(root, "ckpt-store")
	outputs := filepath.Join(root, "outputs")
	fakeRun(t, filepath.Join(outputs, "2026-01-02_03-04-05"), 1, 2)
	_, ts := newTestServer(t, Options{Store: storeDir, OutputsDir: outputs})
	get := func(p string) (int, string) {
		res := request(t, "GET", ts.URL+p, nil)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	postForm := func(p string, file []byte, fields ...string) (int, string) {
		body, ct := form(t, file, fields...)
		res := post(t, context.Background(), ts.URL+p, body, ct)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	abs, _ := filepath.Abs(root)
	paths := []string{root, abs}

	// an empty store
	status, body := get("/api/checkpoints")
	checkNoLeak(t, "GET /api/checkpoints", body, paths...)
	if status != 200 || !strings.Contains(body, `"store":"ckpt-store"`) {
		t.Errorf("checkpoints: %d %s", status, body)
	}
	status, body = postForm("/api/gray", encodePNG(t, photo(20, 20)))
	checkNoLeak(t, "gray with an empty store", body, paths...)
	if status != 404 || !strings.Contains(body, "ckpt-store") {
		t.Errorf("gray with an empty store: %d %s", status, body)
	}
	status, body = get("/api/run")
	checkNoLeak(t, "GET /api/run", body, paths...)
	if status != 200 || !strings.Contains(body, `"dir":"2026-01-02_03-04-05"`) {
		t.Errorf("run: %d %s", status, body)
	}

	// bad images and forms
	store, _ := openStore(t, storeDir)
	saveTiny(t, store, "epoch-000001", 10, 1)
	png := encodePNG(t, photo(200, 200))
	for _, c := range []struct {
		name string
		file []byte
	}{{"truncated", png[:len(png)/2]}, {"not an image", []byte("hello")}, {"bad header", append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{7}, 40)...)}} {
		status, body = postForm("/api/gray", c.file)
		checkNoLeak(t, c.name, body, paths...)
		if status/100 != 4 {
			t.Errorf("%s: %d %s", c.name, status, body)
		}
	}
	res := post(t, context.Background(), ts.URL+"/api/gray", []byte("--x\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc"), "multipart/form-data; boundary=x")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	checkNoLeak(t, "a truncated form", string(b), paths...)

	// a damaged checkpoint (a server fault: 500, details in the log only)
	saveTiny(t, store, "epoch-000002", 20, 2)
	os.WriteFile(filepath.Join(storeDir, "epoch-000002", "ema.safetensors"), []byte("garbage"), 0o644)
	status, body = postForm("/api/colorize", png, "steps", "10", "samples", "1", "checkpoint", "epoch-000002")
	checkNoLeak(t, "a damaged checkpoint", body, paths...)
	if status/100 != 5 && status/100 != 4 {
		t.Errorf("damaged checkpoint: %d %s", status, body)
	}

	// --run naming a missing folder
	_, ts2 := newTestServer(t, Options{Store: storeDir, RunDir: filepath.Join(root, "missing-run")})
	res = request(t, "GET", ts2.URL+"/api/run", nil)
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	checkNoLeak(t, "a missing --run", string(b), paths...)
	if res.StatusCode != 404 || !strings.Contains(string(b), "missing-run") {
		t.Errorf("missing run: %d %s", res.StatusCode, b)
	}
}

func openStore(t *testing.T, dir string) (checkpoint.Store, error) {
	t.Helper()
	s, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, nil
}

// TestProbes: /healthz and /readyz answer a platform's probes — by pod
// address, without the token — and tell nothing else; /readyz fails while
// the checkpoint store does not answer.
func TestProbes(t *testing.T) {
	_, ts := newTestServer(t, Options{Token: "correct-horse-battery-staple"})
	for _, p := range []string{"/healthz", "/readyz"} {
		res := request(t, "GET", ts.URL+p, nil, "Host", "10.1.2.3:7860")
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || len(b) > 16 {
			t.Errorf("GET %s: %d %q", p, res.StatusCode, b)
		}
	}
	res := request(t, "POST", ts.URL+"/healthz", nil)
	res.Body.Close()
	if res.StatusCode == 200 {
		t.Error("POST /healthz answered 200")
	}
	gone := t.TempDir()
	s, ts2 := newTestServer(t, Options{Store: gone})
	_ = s
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gone, []byte("not a folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = request(t, "GET", ts2.URL+"/readyz", nil)
	res.Body.Close()
	if res.StatusCode != 503 {
		t.Errorf("/readyz with a store that does not answer: %d", res.StatusCode)
	}
}
