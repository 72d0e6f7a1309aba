package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/allreduce"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/internal/atomicfile"
	"github.com/tinct/tinct/model"
)

// benchClusterStarted, if set (by a test), is told the pid of every child
// process tinct bench cluster starts.
var benchClusterStarted func(pid int)

type benchClusterFlags struct {
	workers      []int
	widths       []string
	steps        int
	warmup       int
	snapshot     int
	inFlight     int
	computes     []string
	imageSize    int
	batch        int
	ringReps     int
	runs         int
	childThreads int
	timeout      time.Duration
	jsonPath     string
	keep         bool
}

// clusterBenchRow is one line of tinct bench cluster's table.
type clusterBenchRow struct {
	Workers       int       `json:"workers"`
	Widths        []int     `json:"widths"`
	Compute       string    `json:"compute"` // real, or none: the workers skip every step's work (worker join --no-compute)
	Params        int       `json:"params"`
	Buffers       int       `json:"buffers"`
	UpdateBytes   int       `json:"update_bytes"` // (params + BN buffers) × 4: what rank 0 sends the coordinator and the ring reduces
	ImageSize     int       `json:"image_size"`
	BatchPerWkr   int       `json:"batch_per_worker"`
	StepsMeasured int       `json:"steps_measured"` // per run
	Runs          int       `json:"runs"`
	StepMs        float64   `json:"step_ms"`                // mean wall time between commits (median over runs)
	StepMedianMs  float64   `json:"step_median_ms"`         // median of the steps (median over runs)
	StepsPerSec   float64   `json:"steps_per_sec"`          // 1000 / StepMs
	RingInStepMs  float64   `json:"ring_after_backward_ms"` // the workers' ring time after backward (ring_seconds in the log; median over runs)
	BareRingMs    float64   `json:"bare_ring_ms"`           // mean time of one AllReduce of UpdateBytes (median over runs)
	BareRingPerS  float64   `json:"bare_ring_per_sec"`
	Ratio         float64   `json:"ratio"`       // StepMs / BareRingMs
	OverheadMs    float64   `json:"overhead_ms"` // StepMs − BareRingMs
	AllRuns       []float64 `json:"step_ms_runs"`
	AllRingRuns   []float64 `json:"bare_ring_ms_runs"`
}

func newBenchClusterCmd() *cobra.Command {
	var b benchClusterFlags
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Time a cluster's step against a bare ring all-reduce of the same bytes (real processes on 127.0.0.1)",
		Long: `Measures the cluster's own cost per step on this machine. For each --workers
count and each --widths network it starts, as child processes of this
binary, a coordinator (tinct coordinator start --plaintext on 127.0.0.1,
--min-workers N) and N workers (tinct worker join), trains one epoch of
--warmup + --steps steps on synthetic photos prepared at --image-size
(--batch images per worker per step) with --snapshot-every and
--steps-in-flight, and reads each step's wall time from the coordinator's
"step committed" log lines, dropping the first --warmup: a snapshot commits
--snapshot-every steps at once, each logged with that span's wall time
divided by its steps, so --warmup and --steps must be multiples of
--snapshot-every (the warm-up's steps then never share a span with the
timed ones). Then it starts N processes that do
nothing but ring all-reduces (allreduce.Ring.AllReduce, the cluster's ring,
plaintext) of the same number of floats — the network's parameters plus its
BatchNorm buffers, the update a step reduces — and times --ring-reps of them
after a warm-up. The table gives both and their ratio. The smallest widths
take the compute out (almost: a step still loads, runs and checksums a tiny
network); the full widths give the training speed.

Everything runs in a temporary folder (TMPDIR) that is removed at the end,
every child is killed if still running, and every wait has a deadline
(--timeout per run).`,
		Example: `  tinct bench cluster                                   # --workers 2,4, full and tiny widths
  tinct bench cluster --workers 2 --widths 32,64,96,128 --steps 100 --runs 3 --json out.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return benchCluster(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), b)
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&b.workers, "workers", []int{2, 4}, "worker counts to measure")
	f.StringArrayVar(&b.widths, "widths", []string{"32,64,96,128", "1,1"}, "networks to measure, each a comma-separated list of widths (repeat the flag); default the full network and the smallest")
	f.IntVar(&b.steps, "steps", 50, "steps timed per run (after the warm-up; a multiple of --snapshot-every)")
	f.IntVar(&b.warmup, "warmup", 50, "steps dropped at the start of each run (ring forming, first allocations; a multiple of --snapshot-every)")
	f.IntVar(&b.snapshot, "snapshot-every", 50, "the coordinator's snapshot_every (the default configuration's)")
	f.IntVar(&b.inFlight, "steps-in-flight", 2, "the coordinator's steps_in_flight (the default configuration's)")
	f.StringSliceVar(&b.computes, "compute", []string{"real", "none"}, "what the workers compute: real steps, and/or none (no forward, backward or update: the protocol and the ring alone)")
	f.IntVar(&b.imageSize, "image-size", 16, "training image size")
	f.IntVar(&b.batch, "batch", 2, "images per worker per step")
	f.IntVar(&b.ringReps, "ring-reps", 30, "bare all-reduces timed per run (after 3 warm-up ones)")
	f.IntVar(&b.runs, "runs", 1, "runs of everything; the table gives the median over runs")
	f.IntVar(&b.childThreads, "child-threads", 1, "--threads of each coordinator and worker process")
	f.DurationVar(&b.timeout, "timeout", 3*time.Minute, "deadline of each cluster or ring run")
	f.StringVar(&b.jsonPath, "json", "", "also write the rows as JSON to this file")
	f.BoolVar(&b.keep, "keep", false, "keep the temporary folder (logs) and print where it is")
	cmd.AddCommand(newBenchRingMemberCmd())
	return cmd
}

func parseWidths(s string) ([]int, error) {
	var ws []int
	for _, p := range strings.Split(s, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(strings.Trim(p, "[]")))
		if err != nil || w < 1 {
			return nil, fmt.Errorf("--widths %q: want positive integers separated by commas", s)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

func benchCluster(ctx context.Context, out, errw io.Writer, b benchClusterFlags) error {
	if len(b.workers) == 0 || len(b.widths) == 0 || b.steps < 1 || b.warmup < 0 || b.batch < 1 || b.ringReps < 1 || b.runs < 1 || b.snapshot < 1 || b.inFlight < 1 {
		return errors.New("bench cluster: --workers, --widths, --steps, --batch, --ring-reps, --runs, --snapshot-every and --steps-in-flight must be positive")
	}
	if b.steps%b.snapshot != 0 || b.warmup%b.snapshot != 0 {
		return fmt.Errorf("bench cluster: --warmup %d and --steps %d must be multiples of --snapshot-every %d (a snapshot's steps share one wall time)", b.warmup, b.steps, b.snapshot)
	}
	for _, n := range b.workers {
		if n < 2 {
			return fmt.Errorf("--workers %d: a ring needs at least 2", n)
		}
	}
	for _, c := range b.computes {
		if c != "real" && c != "none" {
			return fmt.Errorf("--compute %q: want real or none", c)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	type netSpec struct {
		widths          []int
		params, buffers int
	}
	var nets []netSpec
	for _, s := range b.widths {
		ws, err := parseWidths(s)
		if err != nil {
			return err
		}
		cfg := model.DefaultConfig()
		cfg.Widths = ws
		if b.imageSize%(1<<(len(ws)-1)) != 0 {
			return fmt.Errorf("--image-size %d: widths %v need a multiple of %d", b.imageSize, ws, 1<<(len(ws)-1))
		}
		net, err := model.New(cfg)
		if err != nil {
			return err
		}
		nets = append(nets, netSpec{ws, net.NumParams(), net.NumBuffers()})
	}
	work, err := os.MkdirTemp("", "tinct-bench-cluster-")
	if err != nil {
		return err
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	r := &clusterBench{b: b, exe: exe, work: work, log: errw, secret: hex.EncodeToString(secret)}
	defer func() {
		r.killAll()
		if b.keep {
			fmt.Fprintf(errw, "bench cluster: logs kept in %s\n", work)
		} else {
			_ = os.RemoveAll(work)
		}
	}()

	start := time.Now()
	var rows []clusterBenchRow
	for _, n := range b.workers {
		for _, ns := range nets {
			for _, comp := range b.computes {
				row := clusterBenchRow{Workers: n, Widths: ns.widths, Compute: comp, Params: ns.params, Buffers: ns.buffers, UpdateBytes: 4 * (ns.params + ns.buffers),
					ImageSize: b.imageSize, BatchPerWkr: b.batch, StepsMeasured: b.steps, Runs: b.runs}
				var medians, rings []float64
				for run := range b.runs {
					steps, ringIn, err := r.cluster(ctx, n, ns.widths, comp == "none", run)
					if err != nil {
						return err
					}
					row.AllRuns = append(row.AllRuns, benchMean(steps)*1000)
					medians = append(medians, benchMedian(steps)*1000)
					rings = append(rings, benchMean(ringIn)*1000)
					ar, err := r.ring(ctx, n, ns.params+ns.buffers, comp, run)
					if err != nil {
						return err
					}
					row.AllRingRuns = append(row.AllRingRuns, benchMean(ar)*1000)
					fmt.Fprintf(errw, "bench cluster: %d workers, widths %v, compute %s, run %d: step %.2f ms, bare ring %.2f ms (%.0fs so far)\n",
						n, ns.widths, comp, run+1, benchMean(steps)*1000, benchMean(ar)*1000, time.Since(start).Seconds())
				}
				row.StepMs = benchMedian(row.AllRuns)
				row.StepMedianMs = benchMedian(medians)
				row.RingInStepMs = benchMedian(rings)
				row.BareRingMs = benchMedian(row.AllRingRuns)
				row.StepsPerSec = 1000 / row.StepMs
				row.BareRingPerS = 1000 / row.BareRingMs
				row.Ratio = row.StepMs / row.BareRingMs
				row.OverheadMs = row.StepMs - row.BareRingMs
				rows = append(rows, row)
			}
		}
	}
	writeClusterTable(out, rows)
	fmt.Fprintf(out, "total %.1f s\n", time.Since(start).Seconds())
	if b.jsonPath != "" {
		data, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(b.jsonPath, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeClusterTable(out io.Writer, rows []clusterBenchRow) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workers\twidths\tcompute\tparams+buffers\tupdate MB\tstep ms\tstep median ms\tsteps/s\tring after backward ms\tbare ring ms\tbare rings/s\tstep / bare ring\tstep − bare ring ms\t")
	for _, r := range rows {
		ws := strings.ReplaceAll(fmt.Sprint(r.Widths), " ", ",")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.3f\t%.2f\t%.2f\t%.1f\t%.2f\t%.2f\t%.1f\t%.2f\t%.2f\t\n", r.Workers, ws, r.Compute, r.Params+r.Buffers, float64(r.UpdateBytes)/1e6,
			r.StepMs, r.StepMedianMs, r.StepsPerSec, r.RingInStepMs, r.BareRingMs, r.BareRingPerS, r.Ratio, r.OverheadMs)
	}
	tw.Flush()
}

func benchMean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func benchMedian(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// clusterBench runs the child processes of tinct bench cluster.
type clusterBench struct {
	b      benchClusterFlags
	exe    string
	work   string
	log    io.Writer
	secret string

	mu       sync.Mutex
	children []*benchChild
}

// benchChild is a child process, in a process group of its own, whose
// output goes to a file.
type benchChild struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (r *clusterBench) start(name, dir string, args ...string) (*benchChild, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(r.work, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &benchChild{name: name, log: logPath, done: make(chan struct{})}
	c.cmd = exec.Command(r.exe, args...)
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = f, f
	c.cmd.Env = append(os.Environ(), "TINCT_CLUSTER_SECRET="+r.secret, "TINCT_TLS_DIR=")
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench cluster: start %s: %w", name, err)
	}
	r.mu.Lock()
	r.children = append(r.children, c)
	r.mu.Unlock()
	if benchClusterStarted != nil {
		benchClusterStarted(c.cmd.Process.Pid)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// killAll kills every child's process group that is still running and
// waits for the children (each for up to 10 s).
func (r *clusterBench) killAll() {
	r.mu.Lock()
	cs := r.children
	r.children = nil
	r.mu.Unlock()
	for _, c := range cs {
		select {
		case <-c.done:
		default:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, c := range cs {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(r.log, "bench cluster: %s (pid %d) did not exit after SIGKILL\n", c.name, c.cmd.Process.Pid)
		}
	}
}

// tail is the end of a child's log, for error messages.
func (c *benchChild) tail() string {
	data, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitLine waits until the child's log has a line matching re and returns
// its submatches; it fails at the deadline or when the child exits first.
func (c *benchChild) waitLine(ctx context.Context, re *regexp.Regexp, deadline time.Time) ([]string, error) {
	for {
		exited := false
		select {
		case <-c.done:
			exited = true
		default:
		}
		if data, err := os.ReadFile(c.log); err == nil {
			if m := re.FindStringSubmatch(string(data)); m != nil {
				return m, nil
			}
		}
		if exited {
			return nil, fmt.Errorf("bench cluster: %s exited (%v) before logging /%s/:\n%s", c.name, c.err, re, c.tail())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench cluster: %s logged no /%s/ by the deadline:\n%s", c.name, re, c.tail())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// wait waits for the child to exit, until the deadline; a non-zero exit is an error.
func (c *benchChild) wait(ctx context.Context, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("bench cluster: %s: %w:\n%s", c.name, c.err, c.tail())
		}
		return nil
	case <-t.C:
		return fmt.Errorf("bench cluster: %s still running at the deadline:\n%s", c.name, c.tail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

var (
	reBenchListen = regexp.MustCompile(`coordinator listening for workers"? addr=(\S+)`)
	reBenchStep   = regexp.MustCompile(`step committed"? step=(\d+) .*\sseconds=(\S+) ring_seconds=(\S+)`)
)

// writeBenchPhotos writes n small synthetic photos (smooth colour gradients, each
// different) into dir.
func writeBenchPhotos(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, 32, 32))
		for y := range 32 {
			for x := range 32 {
				img.Set(x, y, color.RGBA{uint8(8*x + 7*i), uint8(8*y + 13*i), uint8(31 * i), 255})
			}
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("p%04d.png", i)))
		if err != nil {
			return err
		}
		err = png.Encode(f, img)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// cluster trains one epoch of warmup+steps steps on n worker processes and
// returns the timed steps' wall times and ring times (seconds).
func (r *clusterBench) cluster(ctx context.Context, n int, widths []int, noCompute bool, run int) (steps, ring []float64, err error) {
	b := r.b
	mode := "real"
	if noCompute {
		mode = "none"
	}
	dir := filepath.Join(r.work, fmt.Sprintf("cluster-%d-%s-%s-%d", n, strings.Trim(strings.ReplaceAll(fmt.Sprint(widths), " ", "x"), "[]"), mode, run))
	total := b.warmup + b.steps
	bs := b.batch * n
	data := filepath.Join(dir, "prepared")
	if err := writeBenchPhotos(filepath.Join(dir, "photos"), bs*total+2); err != nil {
		return nil, nil, err
	}
	if _, err := dataset.Prepare(ctx, dataset.PrepareOptions{Source: filepath.Join(dir, "photos"), Format: "auto", Out: data, ImageSize: b.imageSize, Val: 2, Seed: 1}); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(b.timeout)
	threads := strconv.Itoa(b.childThreads)
	ws := "[" + strings.ReplaceAll(strings.Trim(fmt.Sprint(widths), "[]"), " ", ",") + "]"
	co, err := r.start(fmt.Sprintf("coordinator-%d-%s-%s-%d", n, ws, mode, run), filepath.Join(dir, "coordinator"),
		"--log-format", "text", "-v", "--threads", threads, "coordinator", "start", "--plaintext", "--listen", "127.0.0.1:0",
		"--gossip-profile", "local", "--min-workers", strconv.Itoa(n), "--wait", b.timeout.String(),
		"dataset="+data, fmt.Sprintf("image_size=%d", b.imageSize), "model.widths="+ws, fmt.Sprintf("batch_size=%d", bs),
		"epochs=1", "sample_every=0", "sample_steps=1", "checkpoint_every=1000", "val_images=2", "test_images=0",
		fmt.Sprintf("snapshot_every=%d", b.snapshot), fmt.Sprintf("steps_in_flight=%d", b.inFlight),
		"output_dir="+filepath.Join(dir, "runs"), "store="+filepath.Join(dir, "ckpt"), "seed=1")
	if err != nil {
		return nil, nil, err
	}
	m, err := co.waitLine(ctx, reBenchListen, deadline)
	if err != nil {
		return nil, nil, err
	}
	var workers []*benchChild
	for i := range n {
		name := fmt.Sprintf("w%d", i)
		args := []string{"--log-format", "text", "--threads", threads, "worker", "join", "--plaintext", "--coordinator", m[1], "--name", name, "--wait", b.timeout.String()}
		if noCompute {
			args = append(args, "--no-compute")
		}
		w, err := r.start(fmt.Sprintf("worker-%d-%s-%s-%d-%s", n, ws, mode, run, name), filepath.Join(dir, name), args...)
		if err != nil {
			return nil, nil, err
		}
		workers = append(workers, w)
	}
	if err := co.wait(ctx, deadline); err != nil {
		return nil, nil, err
	}
	for _, w := range workers {
		if err := w.wait(ctx, time.Now().Add(30*time.Second)); err != nil {
			return nil, nil, err
		}
	}
	f, err := os.Open(co.log)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	seen := 0
	for sc.Scan() {
		m := reBenchStep.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		seen++
		step, _ := strconv.Atoi(m[1])
		if step <= b.warmup {
			continue
		}
		s, err1 := strconv.ParseFloat(m[2], 64)
		rs, err2 := strconv.ParseFloat(m[3], 64)
		if err1 != nil || err2 != nil {
			return nil, nil, fmt.Errorf("bench cluster: bad step line %q", sc.Text())
		}
		steps = append(steps, s)
		ring = append(ring, rs)
	}
	if seen != total || len(steps) != b.steps {
		return nil, nil, fmt.Errorf("bench cluster: the coordinator logged %d steps (%d timed), want %d (%d):\n%s", seen, len(steps), total, b.steps, co.tail())
	}
	return steps, ring, sc.Err()
}

// ring runs n ring-member processes that all-reduce floats values
// ring-reps times and returns rank 0's times (seconds).
func (r *clusterBench) ring(ctx context.Context, n, floats int, tag string, run int) ([]float64, error) {
	b := r.b
	dir := filepath.Join(r.work, fmt.Sprintf("ring-%d-%d-%s-%d", n, floats, tag, run))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(b.timeout)
	var members []*benchChild
	for rank := range n {
		c, err := r.start(fmt.Sprintf("ring-%d-%d-%s-%d-rank%d", n, floats, tag, run, rank), dir,
			"--log-format", "text", "--threads", strconv.Itoa(b.childThreads), "bench", "cluster", "ring-member",
			"--rank", strconv.Itoa(rank), "--size", strconv.Itoa(n), "--dir", dir, "--floats", strconv.Itoa(floats),
			"--reps", strconv.Itoa(b.ringReps), "--timeout", b.timeout.String())
		if err != nil {
			return nil, err
		}
		members = append(members, c)
	}
	for _, c := range members {
		if err := c.wait(ctx, deadline); err != nil {
			return nil, err
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "result-0.json"))
	if err != nil {
		return nil, err
	}
	var res ringMemberResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, err
	}
	return res.Seconds, nil
}

type ringMemberResult struct {
	Seconds []float64 `json:"seconds"`
}

// newBenchRingMemberCmd is one rank of tinct bench cluster's bare ring.
func newBenchRingMemberCmd() *cobra.Command {
	var (
		rank, size, floats, reps int
		dir                      string
		timeout                  time.Duration
	)
	cmd := &cobra.Command{
		Use:    "ring-member",
		Short:  "One rank of tinct bench cluster's bare ring all-reduce (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			secret := os.Getenv("TINCT_CLUSTER_SECRET")
			if secret == "" || dir == "" || size < 2 || floats < 1 || reps < 1 {
				return errors.New("ring-member: needs $TINCT_CLUSTER_SECRET, --dir, --size ≥ 2, --floats and --reps")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ring, err := allreduce.Listen(allreduce.Config{Rank: rank, Size: size, Listen: "127.0.0.1:0", Secret: []byte(secret), Timeout: timeout})
			if err != nil {
				return err
			}
			defer ring.Close()
			if err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("addr-%d", rank)), []byte(ring.Addr()), ".addr-"); err != nil {
				return err
			}
			next, err := benchWaitFile(ctx, filepath.Join(dir, fmt.Sprintf("addr-%d", (rank+1)%size)))
			if err != nil {
				return err
			}
			if err := ring.Connect(ctx, string(next)); err != nil {
				return err
			}
			tmpl := make([]float32, floats)
			for i := range tmpl {
				tmpl[i] = float32(i%97+rank) * 1e-3
			}
			vec := make([]float32, floats)
			const warm = 3
			var res ringMemberResult
			for i := range warm + reps {
				copy(vec, tmpl) // the same values each time (outside the timing)
				t0 := time.Now()
				if err := ring.AllReduce(ctx, int64(i), vec); err != nil {
					return err
				}
				if i >= warm {
					res.Seconds = append(res.Seconds, time.Since(t0).Seconds())
				}
			}
			data, _ := json.Marshal(res)
			if err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("result-%d", rank)+".json"), data, ".result-"); err != nil {
				return err
			}
			// close only when every rank is done: a rank's last sends may
			// still be on their way to its neighbour
			if err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("done-%d", rank)), nil, ".done-"); err != nil {
				return err
			}
			for r := range size {
				if _, err := benchWaitFile(ctx, filepath.Join(dir, fmt.Sprintf("done-%d", r))); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&rank, "rank", 0, "this rank")
	f.IntVar(&size, "size", 2, "ranks in the ring")
	f.StringVar(&dir, "dir", "", "folder where the ranks exchange addresses and write results")
	f.IntVar(&floats, "floats", 0, "floats all-reduced")
	f.IntVar(&reps, "reps", 30, "timed all-reduces (after 3 warm-up ones)")
	f.DurationVar(&timeout, "timeout", 3*time.Minute, "deadline of the whole run")
	return cmd
}

// benchWaitFile waits for path to exist and returns its contents.
func benchWaitFile(ctx context.Context, path string) ([]byte, error) {
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			return data, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
