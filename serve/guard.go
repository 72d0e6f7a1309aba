package serve

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// sessionCookie is the cookie POST /api/login sets when a token is required.
const sessionCookie = "tinct_session"

// guard checks a request before any handler runs:
//
//   - without a token, the request must be addressed to a loopback host
//     (127.0.0.1, [::1], localhost): a page of another site whose name
//     resolves to 127.0.0.1 (DNS rebinding) is refused;
//   - a request that changes state (anything but GET, HEAD, OPTIONS) must
//     come from this server's own page: its Origin, when present, names
//     the host it is addressed to, and without an Origin a browser must
//     not say it is cross-site (Sec-Fetch-Site); a form that another site
//     submits is refused before its upload is read;
//   - with a token, the API and the run's images need it (requiresToken).
func (s *Server) guard(r *http.Request) *apiError {
	if s.opts.Token == "" && !loopbackHost(r.Host) {
		return &apiError{status: http.StatusForbidden, msg: fmt.Sprintf(
			"this server answers only requests addressed to 127.0.0.1, [::1] or localhost, not %q: open it as http://127.0.0.1:PORT/ (it was started without a token; see docs/serve.md to serve other names)", r.Host)}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if !sameOrigin(r) {
			return &apiError{status: http.StatusForbidden, msg: "refused: this request comes from another site's page (a cross-site request); use this server's own page"}
		}
	}
	if s.opts.Token != "" && requiresToken(r.URL.Path) && !s.authorized(r) {
		return &apiError{status: http.StatusUnauthorized, header: http.Header{"Www-Authenticate": {`Bearer realm="tinct"`}},
			msg: "this server needs its access token: enter it on the page, or send the header Authorization: Bearer TOKEN"}
	}
	return nil
}

// loopbackHost reports whether a Host header names this machine's loopback
// interface.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin reports whether a state-changing request comes from this
// server's own page, or from a client that is not a browser page at all
// (no Origin, no Sec-Fetch-Site: curl, scripts).
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "same-origin", "none":
			return true
		}
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" (sandboxed frames, data: pages) and junk
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	// Behind a reverse proxy that rewrites Host, the host it was asked for.
	// A page of another site cannot set this header on a request without a
	// CORS preflight, which this server never grants.
	for _, h := range strings.Split(r.Header.Get("X-Forwarded-Host"), ",") {
		if h = strings.TrimSpace(h); h != "" && strings.EqualFold(u.Host, h) {
			return true
		}
	}
	return false
}

// requiresToken reports whether a path needs the token when one is set:
// the API (but the login) and the run's images; not the page and its assets.
func requiresToken(path string) bool {
	return strings.HasPrefix(path, "/api/") && path != "/api/login" || strings.HasPrefix(path, "/run/")
}

// sessionValue is the session cookie's value for a token: a MAC of it, so
// the cookie does not hold the token itself.
func sessionValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("tinct serve session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// equalSecret compares two secrets in time that does not depend on where
// they differ (hashing first also hides their lengths).
func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// authorized reports whether r carries the token or the session cookie.
// The scheme's name is case-insensitive ("bearer", "BEARER": RFC 9110,
// 11.1), and may be followed by more than one space.
func (s *Server) authorized(r *http.Request) bool {
	if v, ok := bearerToken(r.Header.Get("Authorization")); ok {
		return equalSecret(v, s.opts.Token)
	}
	c, err := r.Cookie(sessionCookie)
	return err == nil && equalSecret(c.Value, s.session)
}

// bearerToken returns the credentials of an Authorization header of the
// Bearer scheme; ok is false for another scheme (or none).
func bearerToken(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

// handleLogin answers POST /api/login, {"token": "…"} as JSON (or a form
// field "token"): with the right token, 204 and a session cookie (HttpOnly,
// SameSite=Strict, 30 days) that the page's requests then carry; else 401.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token == "" {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "this server needs no token"})
		return
	}
	var token string
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		var in struct{ Token string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeError(w, badRequest(`send {"token": "…"}`))
			return
		}
		token = in.Token
	} else {
		token = r.PostFormValue("token")
	}
	if !equalSecret(strings.TrimSpace(token), s.opts.Token) {
		writeError(w, &apiError{status: http.StatusUnauthorized, msg: "wrong token"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.session, Path: "/", MaxAge: 30 * 24 * 3600,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// slowBody reads a request body under a deadline that moves with the data:
// its first byte must arrive within first of the start; by then and ever
// after, the body must have arrived at rate bytes a second on average
// since the start, with first as grace (the deadline for n bytes is start +
// first + n/rate, whatever the bursts); and no read may wait longer than
// pause. The deadline is the connection's read deadline, so a client that
// sends nothing does not keep its reader (and its queue place) waiting.
// A client that sends its headers, then nothing, holds its place for
// first; one that stops after n bytes for first + n/rate at most.
//
// The deadline must never fire on net/http's own read. Once a body is read
// to its end, net/http starts a background read on the connection to notice
// a client going away; if that read fails (a deadline passing counts), it
// cancels the context of the whole connection, not only of this request.
// The connection stays open for keep-alive, and every later request on it
// starts with its context already cancelled (a browser reusing it got
// "context canceled" answers to plain GETs). So the deadline is cleared as
// soon as the body ends, and a connection whose context was hit anyway, or
// whose body was abandoned under a passed deadline, is closed after the
// answer.
type slowBody struct {
	r        io.Reader
	w        http.ResponseWriter
	ctx      context.Context // the request's
	rc       *http.ResponseController
	start    time.Time
	n        int64
	first    time.Duration
	pause    time.Duration
	rate     int64
	timedOut bool
	ended    bool // the body was read to its end; the deadline is cleared
}

func newSlowBody(w http.ResponseWriter, r *http.Request, first, pause time.Duration, rate int64) *slowBody {
	return &slowBody{r: r.Body, w: w, ctx: r.Context(), rc: http.NewResponseController(w), start: time.Now(), first: first, pause: pause, rate: rate}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.ended {
		return 0, io.EOF
	}
	if b.rc != nil {
		dl := b.start.Add(b.first + time.Duration(float64(b.n)/float64(b.rate)*float64(time.Second)))
		if idle := time.Now().Add(b.pause); idle.Before(dl) {
			dl = idle
		}
		if err := b.rc.SetReadDeadline(dl); err != nil {
			b.rc = nil // not a net/http connection (tests with a recorder)
		}
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	var ne net.Error
	if err != nil && (errors.As(err, &ne) && ne.Timeout()) {
		b.timedOut = true
	}
	if err == io.EOF {
		b.ended = true
		if b.rc != nil {
			b.rc.SetReadDeadline(time.Time{}) // net/http's background read has started
		}
	}
	return n, err
}

// finish ends the body's reading: ok after it was read in full. After a
// failure it leaves a passed deadline, so that the server does not wait to
// drain the rest, and asks for the connection to be closed after the
// answer. It also closes a connection whose context was cancelled while its
// body was read (see slowBody), and reports that as a timeout.
func (b *slowBody) finish(ok bool) {
	if b.rc == nil {
		return
	}
	hit := b.ctx.Err() != nil // the connection's context, cancelled while reading
	switch {
	case b.ended || hit: // the deadline is cleared already, or too late to matter
	case ok:
		b.rc.SetReadDeadline(time.Time{})
	default:
		b.rc.SetReadDeadline(time.Now())
	}
	if !ok || hit {
		b.w.Header().Set("Connection", "close")
	}
	if ok && hit {
		b.timedOut = true // only a deadline cancels a live connection here
	}
}

// tooSlow is the answer to an upload cut off by its deadline.
func (s *Server) tooSlow() *apiError {
	return &apiError{status: http.StatusRequestTimeout, msg: fmt.Sprintf(
		"the upload arrived too slowly (nothing within %v, under %s/s on average, or a pause of more than %v) and was stopped; try again on a better connection",
		s.opts.FirstByteTimeout, formatBytes(s.opts.MinBodyRate), s.opts.BodyTimeout)}
}
