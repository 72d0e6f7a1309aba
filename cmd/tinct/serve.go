package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/demo"
	"github.com/tinct/tinct/serve"
)

// shutdownGrace is how long a stopping server lets colorizations in
// progress finish before it closes their connections (which cancels them).
const shutdownGrace = 5 * time.Second

func newServeCmd() *cobra.Command {
	var opts serve.Options
	var addr, metricsURL, tokenFile string
	var withDemo bool
	var memoryMiB int64
	var perClient int
	var gf gpuFlags
	cmd := &cobra.Command{
		Use:   "serve [--addr HOST:PORT] [--store STORE] [--run DIR | --outputs DIR] [--queue N]",
		Short: "Serve the web app: colorize photos in a browser, follow a training run",
		Long: `Serves a web page (on 127.0.0.1:7860 by default: only this machine can reach
it) with two parts:

Colorize: choose a PNG or JPEG (file picker, drag and drop, paste, or one of
the examples); it is shown as it is, and in gray as the network sees it (the
whole frame, its longer side at the model's size). Choose the DDIM steps
(10–100) and the number of colorizations (1–8), press Colorize, follow the
progress, and download each result at full resolution (the model's colours
on the photo's own luminance, at its own size) or at the model's size.
The checkpoint is the newest in --store unless one is picked from the list;
the bundled demo model (demo/MODEL.md: 64×64, trained on landscape photos)
is offered too, and used while the store holds no checkpoint (--demo=false
leaves it out).
One colorization runs at a time (it uses every core); --queue more may wait,
told their place as the line moves, and beyond that the server answers
"busy, try again" (HTTP 503). A colorization stops when its browser tab goes
away. Uploads are limited to 20 MiB, 50 megapixels and 256 MiB decoded; their
first byte must come within 5 s and the rest at 32 KiB/s or more on average.
A client address may have one upload or waiting colorization at a time
(--per-client); a request finding every place taken waits for one, first
come first served, up to 20 s. Every decoded, rotated and gray copy of the
photos is reserved against one memory budget (--memory-budget, 256 MiB)
before it is made, with the kept results; memory given back goes back to
the operating system (a burst of huge photos leaves the process at its
idle size).

Training: the loss per step and per epoch, the sample grids of each epoch,
for the run in --run, or else the newest run under --outputs (looked up again
at each refresh, so a run started later appears); and, with --coordinator
URL (a trainer's Prometheus endpoint, tinct train metrics_addr=…), the
trainer's step, epoch, workers and images/s.

Access: without a token the server answers only requests addressed to
127.0.0.1, [::1] or localhost. To serve other machines (--addr 0.0.0.0:7860)
it needs an access token, from --token-file FILE or $TINCT_SERVE_TOKEN (at
least 16 characters); the page asks for it once and keeps a session cookie.
Requests from other sites' pages are refused either way.

The page, its API (every request and every event of the colorization
stream) and the limits are described in docs/serve.md; the page needs
nothing from other sites. SIGINT or SIGTERM stops the server, letting
colorizations in progress finish for a few seconds.`,
		Example: `  tinct serve
  tinct serve --store outputs/sample-checkpoints --outputs outputs
  tinct serve --store file:///data/checkpoints --run outputs/2026-01-02_03-04-05 --queue 8
  TINCT_SERVE_TOKEN=$(cat ~/.tinct-token) tinct serve --addr 0.0.0.0:7860 --store outputs/checkpoints`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// a --store given must exist (a typo would make an empty one)
			dir := opts.Store
			if u, err := url.Parse(dir); err == nil && strings.EqualFold(u.Scheme, "file") {
				dir = u.Path
			}
			if _, err := os.Stat(dir); os.IsNotExist(err) && cmd.Flags().Changed("store") && !strings.Contains(dir, "://") {
				return fmt.Errorf("serve: --store %s does not exist: give the store a training run saved to (its store=), or leave --store out to start with the bundled demo model", dir)
			}
			if metricsURL != "" {
				opts.Cluster = serve.MetricsCluster{URL: metricsURL, Client: &http.Client{Timeout: 5 * time.Second}}
			}
			token, err := serveToken(tokenFile)
			if err != nil {
				return err
			}
			if token == "" && !loopbackAddr(addr) {
				return fmt.Errorf("serve: --addr %s can be reached from other machines, so the server needs an access token: put one (at least %d characters, e.g. from openssl rand -hex 16) in a file and give --token-file FILE, or set %s; or listen on 127.0.0.1", addr, serve.MinTokenLength, tokenEnv)
			}
			opts.Token = token
			if memoryMiB <= 0 {
				return fmt.Errorf("serve: --memory-budget %d: give the MiB the photos may take, more than 0", memoryMiB)
			}
			opts.MemoryBudget = memoryMiB << 20
			opts.MaxPerClient = perClient
			if perClient <= 0 {
				opts.MaxPerClient = -1 // no limit
			}
			if withDemo {
				if opts.Fallback, err = demo.Load(); err != nil {
					return fmt.Errorf("bundled demo model: %w", err)
				}
			}
			g, err := gf.open()
			if err != nil {
				return err
			}
			if g != nil {
				defer g.close()
				opts.Compute = g.backend
			}
			s, err := serve.New(opts)
			if err != nil {
				return err
			}
			defer s.Close() // before the GPU's close: its networks
			describeStore(cmd.Context(), opts.Store, withDemo)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("serve: %w (is another server on %s? choose another --addr)", err, addr)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServer(ctx, cmd, s, ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:7860", "address to listen on, HOST:PORT")
	f.StringVar(&opts.Store, "store", "outputs/checkpoints", "checkpoint store to colorize with: an existing directory or file:///absolute/dir (the default one is made)")
	f.StringVar(&opts.RunDir, "run", "", "training run directory for the dashboard (default: the newest under --outputs)")
	f.StringVar(&opts.OutputsDir, "outputs", "outputs", "where training runs are (output_dir of tinct train)")
	f.StringVar(&metricsURL, "coordinator", "", "a running trainer's metrics URL for the cluster panel, e.g. http://127.0.0.1:9464/metrics (tinct train metrics_addr=…)")
	f.BoolVar(&opts.Clip, "clip", true, "clamp the sampler's estimate of the clean image to the data range at each step (docs/quality.md: less over-saturated colour)")
	f.BoolVar(&withDemo, "demo", true, "offer the bundled demo model beside the store's checkpoints (used while the store has none)")
	f.IntVar(&opts.Queue, "queue", 4, "colorization requests that may wait behind the running one; more get 503 busy")
	f.Int64Var(&memoryMiB, "memory-budget", serve.DefaultMemoryBudget>>20, "MiB the photos being read, waiting and kept may take at once (every decoded, rotated and gray copy, reserved before it is made); a photo needing more is refused, requests that do not fit wait")
	f.IntVar(&perClient, "per-client", serve.DefaultMaxPerClient, "uploads or waiting colorizations one client address may have at once (0: no limit; behind a reverse proxy every client has its address)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the access token the page and API ask for (default: $"+tokenEnv+"); required unless --addr is a loopback address")
	gf.register(cmd, "run the colorizations' network")
	return cmd
}

// tokenEnv is the environment variable that holds tinct serve's token when
// --token-file is not given.
const tokenEnv = "TINCT_SERVE_TOKEN"

// serveToken reads the token file, else $TINCT_SERVE_TOKEN ("" when
// neither is set). A token on the command line would show in ps.
func serveToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv(tokenEnv)), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	return t, nil
}

// loopbackAddr reports whether a listen address HOST:PORT can be reached
// from this machine only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// runServer serves s on ln until ctx is done, then shuts down gracefully.
func runServer(ctx context.Context, cmd *cobra.Command, s http.Handler, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	url := "http://" + ln.Addr().String() + "/"
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		// every interface: name one that works from here
		url = fmt.Sprintf("http://127.0.0.1:%d/", a.Port)
		slog.Info("listening on every interface: open the page by this machine's name or address", "port", a.Port)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "tinct serve: listening on %s\n", url)
	slog.Info("serving", "url", url)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	slog.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // cancels the requests still running
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// describeStore logs what the store holds, so that an empty or mistyped
// --store shows at start.
func describeStore(ctx context.Context, url string, withDemo bool) {
	store, err := checkpoint.Open(url)
	if err != nil {
		return // serve.New reported it
	}
	infos, err := store.List(ctx)
	switch {
	case err != nil:
		slog.Warn("cannot list checkpoints", "store", store.String(), "err", err)
	case len(infos) == 0 && withDemo:
		slog.Info("no checkpoint in the store yet: colorizing with the bundled demo model ("+demo.Card+") until a training run saves one", "store", store.String())
	case len(infos) == 0:
		slog.Warn("no checkpoint in the store yet: colorizing will fail until a training run saves one", "store", store.String())
	default:
		slog.Info("checkpoints", "store", store.String(), "count", len(infos), "newest", infos[0].Name)
	}
}
