package serve

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/internal/health"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

// Defaults of Options' limits.
const (
	DefaultMaxUploadBytes  = 20 << 20         // 20 MiB
	DefaultMaxPixels       = 50_000_000       // a 50-megapixel photo
	DefaultMaxDecodedBytes = 256 << 20        // 256 MiB: a 64-megapixel 8-bit RGBA image
	DefaultBodyTimeout     = 15 * time.Second // grace, and the longest pause, of an upload
	DefaultMinBodyRate     = 32 << 10         // 32 KiB/s: 20 MiB in under 11 minutes
)

// MinTokenLength is the shortest token Options.Token accepts.
const MinTokenLength = 16

// Options configure a Server.
type Options struct {
	// Store is the checkpoint store to colorize with: a directory or a
	// file:// URL. Empty: the page can show a run, and colorize only with
	// Fallback.
	Store string
	// Fallback, when not nil, is a model offered beside the store's
	// checkpoints under its Name (tinct serve passes the bundled demo
	// model): the default while the store holds none, and chosen by name
	// otherwise.
	Fallback *trainstate.Network
	// Clip clamps the sampler's estimate of the clean image to the data
	// range at each step (model.Sampler.Clip).
	Clip bool
	// Compute, when not nil, opens a device backend (tinct serve --gpu N:
	// a GPU) that a model's network is copied to for its colorizations; it
	// is freed when the model leaves the cache or the server closes
	// (Close).
	Compute func() (nn.Compute, error)
	// RunDir is the run directory the dashboard shows. Empty: the newest
	// run (the most recently written metrics.jsonl) under OutputsDir, looked
	// up at each request, so a new run appears when it starts.
	RunDir     string
	OutputsDir string
	// Queue is how many colorizations may wait behind the running one;
	// more get 503. 0: none wait.
	Queue int
	// MaxUploadBytes bounds a request's body (0: DefaultMaxUploadBytes).
	MaxUploadBytes int64
	// MaxPixels bounds an upload's declared width·height, checked before
	// its pixels are decoded (0: DefaultMaxPixels).
	MaxPixels int64
	// BodyTimeout, FirstByteTimeout and MinBodyRate bound how long an
	// upload may take, from when its reading starts: its first byte must
	// arrive within FirstByteTimeout, from then on it must have arrived at
	// MinBodyRate bytes a second on average (counted from the start, with
	// FirstByteTimeout as grace), and it may never pause for longer than
	// BodyTimeout (0: DefaultBodyTimeout, DefaultMinBodyRate, and
	// DefaultFirstByteTimeout or BodyTimeout if that is shorter).
	BodyTimeout      time.Duration
	FirstByteTimeout time.Duration
	MinBodyRate      int64
	// MaxPerClient is how many requests of each kind (colorizations,
	// gray previews) one client address may have uploading, decoding or
	// waiting in the queue at once (a running colorization no longer
	// counts); more wait for the earlier ones, up to AdmitWait (0:
	// DefaultMaxPerClient; less than 0: no limit). The address is the
	// connection's (an IPv6 one's /64 network): behind a reverse proxy
	// every request comes from the proxy, so there turn it off (-1) or up.
	MaxPerClient int
	// AdmitWait is how long a request waits for a place in the queue (or
	// among the gray previews' places), first come first served, and for
	// the memory budget, before it is answered 503 with Retry-After (0:
	// DefaultAdmitWait; less than 0: no waiting).
	AdmitWait time.Duration
	// MemoryBudget bounds the bytes the requests' photos take at once:
	// every decoded, rotated, gray and fitted copy is reserved against it
	// before it is allocated (at its peak, known from the header), and the
	// kept results count against it too, evicted oldest first when a
	// request needs their room. A photo whose peak exceeds it is refused
	// (413); requests that do not fit now wait (AdmitWait) in order. When
	// a burst gives memory back it is returned to the operating system (0:
	// DefaultMemoryBudget).
	MemoryBudget int64
	// MaxDecodedBytes bounds the memory a decoded upload takes, width ×
	// height × bytes per pixel, checked before decoding (0:
	// DefaultMaxDecodedBytes).
	MaxDecodedBytes int64
	// MaxResultBytes bounds the finished colorizations kept for their
	// full-resolution downloads (each holds its photo's luminance, one byte
	// per pixel; 0: DefaultMaxResultBytes, or a quarter of MemoryBudget if
	// that is less, so that an idle server holds little). The oldest go first,
	// and none stays longer than an hour.
	MaxResultBytes int64
	// Token, when set, is required on every API request: as the header
	// "Authorization: Bearer TOKEN" or the session cookie that POST
	// /api/login sets. Without it, only requests addressed to a loopback
	// host (127.0.0.1, [::1], localhost) are served.
	Token string
	// Cluster reports the training cluster's state for the dashboard; nil
	// reports "not attached to a coordinator".
	Cluster ClusterSource
	// Logger receives request errors and checkpoint warnings (nil:
	// slog.Default()).
	Logger *slog.Logger
}

// Server is the web app. It is an http.Handler; create it with New.
type Server struct {
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	probes  http.Handler // /healthz, /readyz
	models  *models
	queue   *queue
	decode  chan struct{} // bounds concurrent image decodes
	uploads *places       // bounds the /api/gray uploads held at once
	budget  *memBudget    // the photos' memory (MemoryBudget)
	idle    idleReturner  // returns memory to the OS when requests stop
	session string        // the session cookie's value when Token is set
	results *results      // finished colorizations, for full-resolution downloads
	jobs    jobTimes      // how long recent colorizations took: the queue's wait estimates

	// Test hooks: progress, if set, is called after each diffusion step
	// with the request's context; finished with each colorization's result.
	progress func(ctx context.Context, step, steps int)
	finished func(err error)
}

//go:embed static
var staticFiles embed.FS

// maxDecodes is how many uploads are decoded at once (each can take a few
// hundred MB at the pixel limit).
const maxDecodes = 2

// maxGrayUploads is how many /api/gray uploads are read and held at once.
const maxGrayUploads = 4

// New checks the options and returns a Server. It opens the checkpoint store
// (which creates a missing directory) but loads nothing until asked.
func New(opts Options) (*Server, error) {
	if opts.MaxUploadBytes <= 0 {
		opts.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if opts.MaxPixels <= 0 {
		opts.MaxPixels = DefaultMaxPixels
	}
	if opts.MaxDecodedBytes <= 0 {
		opts.MaxDecodedBytes = DefaultMaxDecodedBytes
	}
	if opts.MemoryBudget <= 0 {
		opts.MemoryBudget = DefaultMemoryBudget
	}
	if opts.MaxResultBytes <= 0 {
		opts.MaxResultBytes = min(DefaultMaxResultBytes, opts.MemoryBudget/4)
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = DefaultBodyTimeout
	}
	if opts.FirstByteTimeout <= 0 {
		opts.FirstByteTimeout = min(DefaultFirstByteTimeout, opts.BodyTimeout)
	}
	switch {
	case opts.MaxPerClient == 0:
		opts.MaxPerClient = DefaultMaxPerClient
	case opts.MaxPerClient < 0:
		opts.MaxPerClient = 0 // no limit
	}
	switch {
	case opts.AdmitWait == 0:
		opts.AdmitWait = DefaultAdmitWait
	case opts.AdmitWait < 0:
		opts.AdmitWait = 0
	}
	if opts.MinBodyRate <= 0 {
		opts.MinBodyRate = DefaultMinBodyRate
	}
	if opts.Token != "" && len(opts.Token) < MinTokenLength {
		return nil, fmt.Errorf("serve: the token has %d characters; use at least %d (e.g. openssl rand -hex 16)", len(opts.Token), MinTokenLength)
	}
	if opts.Queue < 0 {
		return nil, fmt.Errorf("serve: queue %d: must be 0 or more", opts.Queue)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, mux: http.NewServeMux(), queue: newQueue(opts.Queue, opts.MaxPerClient),
		decode: make(chan struct{}, maxDecodes), uploads: newPlaces(maxGrayUploads, opts.MaxPerClient),
		budget: newMemBudget(opts.MemoryBudget), results: newResults(opts.MaxResultBytes)}
	s.budget.kept, s.budget.evict = s.results.keptBytes, s.results.evictOldest
	s.idle.free = s.budget.freeNow
	if opts.Token != "" {
		s.session = sessionValue(opts.Token)
	}
	var store checkpoint.Store
	if opts.Store != "" {
		var err error
		if store, err = checkpoint.Open(opts.Store); err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
	}
	s.models = newModels(store, func(err error) { s.log.Warn("checkpoint skipped", "err", err) })
	s.models.fallback, s.models.clip, s.models.device = opts.Fallback, opts.Clip, opts.Compute

	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	s.mux.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if st, err := fs.Stat(static, name); err != nil || st.IsDir() || name == "index.html" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, name)
	})
	s.mux.HandleFunc("GET /api/checkpoints", s.handleCheckpoints)
	s.mux.HandleFunc("GET /api/limits", s.handleLimits)
	s.mux.HandleFunc("POST /api/gray", s.handleGray)
	s.mux.HandleFunc("POST /api/colorize", s.handleColorize)
	s.mux.HandleFunc("GET /api/run", s.handleRun)
	s.mux.HandleFunc("GET /run/images/{file}", s.handleRunImage)
	s.mux.HandleFunc("GET /api/cluster", s.handleCluster)
	s.mux.HandleFunc("POST /api/login", s.handleLogin)
	s.mux.HandleFunc("GET /api/results/{id}/{file}", s.handleResult)
	s.mux.HandleFunc("/api/", s.handleNoEndpoint)
	s.probes = health.Handler(s.ready)
	return s, nil
}

// ready: the checkpoint store answers (a server without a store shows a
// training run only, and is ready as soon as it is up).
func (s *Server) ready() error {
	store := s.models.store
	if store == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := store.List(ctx); err != nil {
		return errors.New("the checkpoint store does not answer")
	}
	return nil
}

// Close frees what the server holds on an accelerator (Options.Compute).
// Call it after the HTTP server has stopped.
func (s *Server) Close() { s.models.close() }

// ServeHTTP serves the app. Every answer forbids content from other sites
// and inline scripts (Content-Security-Policy) and MIME sniffing.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.idle.begin()
	defer s.idle.end()
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method == http.MethodGet && (r.URL.Path == "/healthz" || r.URL.Path == "/readyz") {
		// probes from the platform (by pod address, without a token): they
		// tell nothing but "up" and "ready"
		s.probes.ServeHTTP(w, r)
		return
	}
	if err := s.guard(r); err != nil {
		writeError(w, err)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// handleNoEndpoint answers API requests that match no endpoint: 405 with
// Allow when the path exists for other methods, else 404.
func (s *Server) handleNoEndpoint(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/api/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, header: http.Header{"Allow": {strings.Join(allow, ", ")}},
			msg: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))})
		return
	}
	writeError(w, &apiError{status: http.StatusNotFound, msg: fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path)})
}

// apiError is an error with the HTTP status and the message a person sees.
type apiError struct {
	status int
	msg    string
	header http.Header // extra headers, e.g. Retry-After
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// writeError answers err as JSON {"error": message}: an *apiError with its
// status, errNoStore with 503, anything else with 500.
func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, errNoStore):
		ae = &apiError{status: http.StatusServiceUnavailable, msg: err.Error()}
	default:
		// the details (paths, Go's error text) go to the server's log only
		ae = &apiError{status: http.StatusInternalServerError, msg: "internal error: the server could not do this; its log has the details"}
	}
	for k, v := range ae.header {
		w.Header()[k] = v
	}
	writeJSON(w, ae.status, map[string]string{"error": ae.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// logError logs errors that are the server's fault (500).
func (s *Server) logError(r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) && ae.status != http.StatusInternalServerError || errors.Is(err, errNoStore) {
		return
	}
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
}

// checkpointInfo is one entry of GET /api/checkpoints.
type checkpointInfo struct {
	Name  string    `json:"name"`
	Epoch int       `json:"epoch"`
	Step  int64     `json:"step"`
	Time  time.Time `json:"time"`
	Bytes int64     `json:"bytes"`
	// Bundled marks Options.Fallback (the demo model built into tinct).
	Bundled bool `json:"bundled,omitempty"`
	// Damaged says what is wrong with a checkpoint found damaged.
	Damaged string `json:"damaged,omitempty"`
}

// handleCheckpoints answers GET /api/checkpoints:
//
//	{"store": "checkpoints", "default": "step-000000420", "checkpoints": [{"name", "epoch", "step", "time", "bytes"}, …]}
//
// newest first; "default" is the one used when a request names none: the
// newest that loads (a damaged one, "damaged": "…", is skipped), empty when
// none does. "store" names the store without the server's paths (see
// storeName).
func (s *Server) handleCheckpoints(w http.ResponseWriter, r *http.Request) {
	store, fb := s.models.store, s.models.fallback
	if store == nil && fb == nil {
		writeError(w, errNoStore)
		return
	}
	var infos []checkpoint.Info
	if store != nil {
		var err error
		if infos, err = store.List(r.Context()); err != nil {
			err = fmt.Errorf("list checkpoints in %s: %w", store, err) // logged, not shown
			s.logError(r, err)
			writeError(w, err)
			return
		}
	}
	out := struct {
		Store       string           `json:"store"`
		Default     string           `json:"default"`
		Checkpoints []checkpointInfo `json:"checkpoints"`
	}{Store: s.models.name}
	out.Checkpoints, out.Default = s.models.checkpoints(r.Context(), infos)
	writeJSON(w, http.StatusOK, out)
}

// handleLimits answers GET /api/limits with what a colorization request may
// hold, so that the page can check a file before sending it:
//
//	{"max_upload_bytes", "max_pixels", "max_decoded_bytes", "steps": [10, 100], "samples": [1, 8], "queue"}
func (s *Server) handleLimits(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"max_upload_bytes":  s.opts.MaxUploadBytes,
		"max_pixels":        s.opts.MaxPixels,
		"max_decoded_bytes": s.opts.MaxDecodedBytes,
		"steps":             [2]int{colorize.MinSteps, colorize.MaxSteps},
		"samples":           [2]int{colorize.MinSamples, colorize.MaxSamples},
		"queue":             s.opts.Queue,
	})
}
