package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/dataset"
)

// The fault tests run real processes: this test binary re-executes itself
// as tinct (with the cluster commands added when main.go lacks them).
const execEnv = "TINCT_TEST_EXEC_MAIN"

func init() {
	if os.Getenv(execEnv) != "1" {
		return
	}
	root := newRoot()
	have := map[string]bool{}
	for _, c := range root.Commands() {
		have[c.Name()] = true
	}
	if !have["coordinator"] {
		root.AddCommand(newCoordinatorCmd())
	}
	if !have["worker"] {
		root.AddCommand(newWorkerCmd())
	}
	root.SetArgs(os.Args[1:])
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tinct:", err)
		os.Exit(exitCode(err))
	}
	os.Exit(0)
}

var (
	certsOnce sync.Once
	certsDir  string
	certsErr  error
)

// testCerts makes, once per test binary, the TLS material every process of
// the fault tests uses: `tinct cluster certs --host 127.0.0.1`.
func testCerts(t *testing.T) string {
	t.Helper()
	certsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tinct-test-certs-")
		if err != nil {
			certsErr = err
			return
		}
		c := newClusterCmd()
		c.SetArgs([]string{"certs", "--out", dir, "--host", "127.0.0.1"})
		c.SetOut(io.Discard)
		certsErr = c.Execute()
		certsDir = filepath.Join(dir, "127.0.0.1")
	})
	if certsErr != nil {
		t.Fatal(certsErr)
	}
	return certsDir
}

// proc is a tinct process whose output lines the test can wait for.
type proc struct {
	name    string
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	done    chan struct{}
	eof     chan struct{} // its output is read to the end
	err     error
}

// startTinct starts this test binary as tinct with args, with the TLS
// material in certs. Every output line is kept in p.lines and written to
// log (if not nil), which is closed when the output ends.
func startTinct(name, certs string, log io.WriteCloser, args ...string) (*proc, error) {
	p := &proc{name: name, changed: make(chan struct{}), done: make(chan struct{}), eof: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), execEnv+"=1", "TINCT_CLUSTER_SECRET=fault-test-secret", "TINCT_TLS_DIR="+certs)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.eof)
		if log != nil {
			defer log.Close()
		}
		next := newLineReader(r)
		for {
			line, err := next()
			if err != nil {
				return
			}
			if log != nil {
				fmt.Fprintln(log, line)
			}
			p.mu.Lock()
			p.lines = append(p.lines, line)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		w.Close()
		close(p.done)
	}()
	return p, nil
}

// newLineReader splits r into lines (a progress bar's \r counts as an end
// of line too), however long.
func newLineReader(r io.Reader) func() (string, error) {
	chunk := make([]byte, 32<<10)
	var pending []byte
	var rerr error
	return func() (string, error) {
		for {
			if i := bytes.IndexAny(pending, "\r\n"); i >= 0 {
				line := string(pending[:i])
				pending = pending[i+1:]
				if line == "" {
					continue
				}
				return line, nil
			}
			if rerr != nil {
				if len(pending) > 0 {
					line := string(pending)
					pending = nil
					return line, nil
				}
				return "", rerr
			}
			n, err := r.Read(chunk)
			pending = append(pending, chunk[:n]...)
			rerr = err
		}
	}
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p, err := startTinct(name, testCerts(t), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("TINCT_CLUSTER_LOGS") != "" {
			t.Logf("--- %s output:\n%s", p.name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitFor returns the first line from index from on that matches re, and
// its index; it fails the test at the deadline.
func (p *proc) waitFor(t *testing.T, re *regexp.Regexp, from int, within time.Duration) (int, []string) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for i := from; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if m := re.FindStringSubmatch(p.lines[i]); m != nil {
				p.mu.Unlock()
				return i, m
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if i >= n {
				t.Fatalf("%s exited (%v) before printing %q", p.name, p.err, re)
			}
		case <-deadline.C:
			t.Fatalf("%s: no line matching %q within %v", p.name, re, within)
		}
	}
}

func (p *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("%s still running after %v", p.name, within)
		return nil
	}
}

// preparedSet prepares a tiny dataset of generated photos.
func preparedSet(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "prepared")
	if _, err := dataset.Prepare(context.Background(), dataset.PrepareOptions{Source: photos(t, 20), Format: "auto", Out: out, ImageSize: 8, Val: 2, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	reListen = regexp.MustCompile(`coordinator listening for workers"? addr=(\S+)`)
	reStep   = regexp.MustCompile(`step committed"? step=(\d+)`)
	reLost   = regexp.MustCompile(`worker lost"? worker=(\S+)`)
	reFailed = regexp.MustCompile(`worker failed; backing off"? worker=(\S+)`)
)

func startCoordinator(t *testing.T, data, dir string, flags []string, keys ...string) (*proc, string) {
	t.Helper()
	args := append([]string{"coordinator", "start", "-v", "--threads", "1", "--listen", "127.0.0.1:0"}, flags...)
	args = append(args, "dataset="+data, "image_size=8", "model.widths=[4,8]", "batch_size=6", "sample_every=0", "checkpoint_every=1000",
		"output_dir="+filepath.Join(dir, "runs"), "store="+filepath.Join(dir, "ckpt"), "seed=3")
	co := startProc(t, "coordinator", append(args, keys...)...)
	_, m := co.waitFor(t, reListen, 0, 20*time.Second)
	return co, m[1]
}

func startWorker(t *testing.T, addr, name string) *proc {
	return startProc(t, name, "worker", "join", "--threads", "1", "--coordinator", addr, "--name", name)
}

// committedSteps checks that the coordinator committed steps from..total
// once each.
func committedSteps(t *testing.T, co *proc, from, total int) {
	t.Helper()
	seen := map[int]int{}
	for _, l := range strings.Split(co.output(), "\n") {
		if m := reStep.FindStringSubmatch(l); m != nil {
			seen[mustAtoi(m[1])]++
		}
	}
	for s := from; s <= total; s++ {
		if seen[s] != 1 {
			t.Errorf("%s: step %d committed %d times", co.name, s, seen[s])
		}
	}
	if len(seen) != total-from+1 {
		t.Errorf("%s: %d distinct steps committed, want %d", co.name, len(seen), total-from+1)
	}
}

// finished checks the end of a run: co and the workers ws exit 0, the
// final checkpoint is at step total and co committed steps from..total
// once each.
func finished(t *testing.T, co *proc, ws []*proc, dir string, from, total int) {
	t.Helper()
	if err := co.wait(t, 60*time.Second); err != nil {
		t.Fatalf("%s: %v", co.name, err)
	}
	for _, w := range ws {
		if err := w.wait(t, 10*time.Second); err != nil {
			t.Errorf("%s: %v", w.name, err)
		}
	}
	if got := finalStep(t, filepath.Join(dir, "ckpt")); got != int64(total) {
		t.Errorf("final checkpoint at step %d, want %d", got, total)
	}
	committedSteps(t, co, from, total)
}

// latestCheckpoint is the newest valid checkpoint of store.
func latestCheckpoint(t *testing.T, store string) *checkpoint.Checkpoint {
	t.Helper()
	s, err := checkpoint.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	ck, _, err := s.Latest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

func finalStep(t *testing.T, store string) int64 {
	t.Helper()
	ck := latestCheckpoint(t, store)
	var pos struct {
		Step int64 `json:"step"`
	}
	if err := json.Unmarshal(ck.Parts["state.json"], &pos); err != nil {
		t.Fatal(err)
	}
	return pos.Step
}

// faultOnW1 starts a coordinator with flags and workers w0, w1 and w2 for
// epochs, and sends w1 sig ten steps into training. It returns the
// coordinator, the workers and the index of the coordinator's line then.
func faultOnW1(t *testing.T, dir string, epochs int, flags []string, sig syscall.Signal) (*proc, []*proc, int) {
	t.Helper()
	co, addr := startCoordinator(t, preparedSet(t), dir, flags, fmt.Sprintf("epochs=%d", epochs))
	ws := []*proc{startWorker(t, addr, "w0"), startWorker(t, addr, "w1"), startWorker(t, addr, "w2")}
	i, _ := co.waitFor(t, regexp.MustCompile(`ring formed.*workers="?\[w\d w\d w\d\]`), 0, 30*time.Second)
	i, m := co.waitFor(t, reStep, i, 30*time.Second)
	i, _ = co.waitFor(t, regexp.MustCompile(`step committed"? step=`+strconv.Itoa(mustAtoi(m[1])+10)+`\b`), i, 30*time.Second)
	if err := ws[1].cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return co, ws, i
}

// TestClusterWorkerKilled: three worker processes train; one is killed
// with SIGKILL mid-run; the coordinator notices within seconds, re-forms the
// ring from the survivors and finishes with every step committed once.
func TestClusterWorkerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	const epochs, spe = 150, 3 // 18 training images, batch 6
	co, ws, i := faultOnW1(t, dir, epochs, []string{"--min-workers", "2", "--wait", "30s", "--step-timeout", "20s", "--setup-timeout", "10s", "--ring-timeout", "10s"}, syscall.SIGKILL)
	killed := time.Now()
	_, lost := co.waitFor(t, reLost, i, 10*time.Second)
	if lost[1] != "w1" {
		t.Errorf("lost %s, want w1", lost[1])
	}
	t.Logf("worker loss noticed %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	co.waitFor(t, regexp.MustCompile(`ring formed.*workers="?\[(w0 w2|w2 w0)\]`), i, 20*time.Second)
	finished(t, co, []*proc{ws[0], ws[2]}, dir, 1, epochs*spe)
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// TestClusterWorkerStalled: a worker stopped with SIGSTOP is caught by the
// step deadline (or memberlist), counted as failed and left out of the
// ring while it backs off, and training finishes without it.
func TestClusterWorkerStalled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	const epochs, spe = 100, 3
	co, ws, i := faultOnW1(t, dir, epochs, []string{"--min-workers", "2", "--wait", "30s", "--step-timeout", "10s", "--setup-timeout", "3s", "--ring-timeout", "2s"}, syscall.SIGSTOP)
	stopped := time.Now()
	_, lost := co.waitFor(t, reFailed, i, 15*time.Second)
	if lost[1] != "w1" {
		t.Errorf("lost %s, want w1", lost[1])
	}
	t.Logf("stalled worker dropped %v after SIGSTOP", time.Since(stopped).Round(time.Millisecond))
	finished(t, co, []*proc{ws[0], ws[2]}, dir, 1, epochs*spe)
}

// TestClusterCoordinatorKilledResume: when the coordinator dies the workers
// wait for it; a coordinator started again on the same address with
// resume=true continues from the newest checkpoint, the waiting workers
// rejoin by themselves, every remaining step is committed once and the
// workers exit 0 when training is finished.
func TestClusterCoordinatorKilledResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	data, dir := preparedSet(t), t.TempDir()
	const epochs, spe = 150, 3
	flags := []string{"--min-workers", "2", "--wait", "30s", "--step-timeout", "20s", "--setup-timeout", "10s", "--ring-timeout", "10s"}
	keys := []string{fmt.Sprintf("epochs=%d", epochs), "checkpoint_every=10"}
	co, addr := startCoordinator(t, data, dir, flags, keys...)
	ws := []*proc{startWorker(t, addr, "w0"), startWorker(t, addr, "w1")}
	i, _ := co.waitFor(t, regexp.MustCompile(`checkpoint saved.*step=60\b`), 0, 30*time.Second)
	co.waitFor(t, regexp.MustCompile(`step committed"? step=70\b`), i, 30*time.Second)
	if err := co.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		w.waitFor(t, regexp.MustCompile(`waiting for coordinator`), 0, 20*time.Second)
	}
	ck := finalStep(t, filepath.Join(dir, "ckpt"))
	if ck < 60 || ck%(10*spe) != 0 {
		t.Fatalf("newest checkpoint at step %d", ck)
	}
	co2, _ := startCoordinator(t, data, dir, append(flags, "--listen", addr), append(keys, "resume=true")...)
	co2.waitFor(t, regexp.MustCompile(`resumed.*step=`+strconv.FormatInt(ck, 10)+`\b`), 0, 10*time.Second)
	co2.waitFor(t, regexp.MustCompile(`ring formed.*workers="?\[(w0 w1|w1 w0)\]`), 0, 30*time.Second)
	finished(t, co2, ws, dir, int(ck)+1, epochs*spe)
}

func TestClusterCommandErrors(t *testing.T) {
	t.Setenv("TINCT_CLUSTER_SECRET", "")
	t.Setenv("TINCT_TLS_DIR", "")
	t.Setenv("TINCT_CUDA_LIBS_ONLY", "1") // no driver, whatever this machine has
	t.Setenv("TINCT_CUDA_LIBS", "")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certs := testCerts(t)
	for _, tc := range []struct {
		cmd  func() *cobra.Command
		args []string
		want string
	}{
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--gpu", "0", "--secret-file", secret}, "--gpu 0: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--plaintext"}, "no cluster secret"},
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--secret", "s"}, "unknown flag: --secret"},
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--secret-file", empty, "--plaintext"}, "is empty"},
		{newWorkerCmd, []string{"join", "--secret-file", secret}, "--coordinator HOST:PORT is required"},
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--secret-file", secret}, "no TLS material"},
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--secret-file", secret, "--tls-dir", t.TempDir()}, "tinct cluster certs"},
		{newWorkerCmd, []string{"join", "--coordinator", "10.0.0.1:7070", "--secret-file", secret, "--plaintext"}, "loopback"},
		{newWorkerCmd, []string{"join", "--coordinator", "127.0.0.1:1", "--secret-file", secret, "--tls-dir", certs, "--wait", "1s"}, "coordinator 127.0.0.1:1 unreachable"},
		{newCoordinatorCmd, []string{"start", "--listen", "127.0.0.1:0", "--plaintext"}, "no cluster secret"},
		{newCoordinatorCmd, []string{"start", "--listen", "0.0.0.0:0", "--secret-file", secret, "--plaintext", "dataset=" + t.TempDir()}, "loopback"},
		{newClusterCmd, []string{"certs", "--out", t.TempDir()}, "no --host"},
		{newClusterCmd, []string{"certs", "--host", "a"}, "--out DIR is required"},
	} {
		c := tc.cmd()
		c.SetArgs(tc.args)
		c.SetOut(io.Discard)
		c.SetErr(io.Discard)
		err := c.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestClusterCoordinatorSIGTERM: SIGTERM checkpoints the committed step
// and the coordinator exits 0; the workers stay up waiting for it to come
// back, and exit 0 on their own SIGTERM.
func TestClusterCoordinatorSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	data, dir := preparedSet(t), t.TempDir()
	co, addr := startCoordinator(t, data, dir, []string{"--min-workers", "2"}, "epochs=1000")
	ws := []*proc{startWorker(t, addr, "w0"), startWorker(t, addr, "w1")}
	co.waitFor(t, regexp.MustCompile(`step committed"? step=30\b`), 0, 30*time.Second)
	if err := co.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := co.wait(t, 30*time.Second); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	for _, w := range ws {
		w.waitFor(t, regexp.MustCompile(`coordinator was stopped.*waiting for it to come back`), 0, 10*time.Second)
		select {
		case <-w.done:
			t.Errorf("%s exited (%v) when the coordinator stopped", w.name, w.err)
			continue
		default:
		}
		if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := w.wait(t, 10*time.Second); err != nil {
			t.Errorf("%s after SIGTERM: %v", w.name, err)
		}
	}
	_, m := co.waitFor(t, regexp.MustCompile(`checkpoint saved.*step=(\d+)`), 0, time.Second)
	if got := finalStep(t, filepath.Join(dir, "ckpt")); got != int64(mustAtoi(m[1])) || got < 30 {
		t.Errorf("checkpoint at step %d, log says %s", got, m[1])
	}
}

// TestClusterWorkerRefusedExits: real worker processes refused for a
// reason that will not change — plaintext against the TLS coordinator, a
// --name a live worker has — say so and exit with status 3 at once (the
// default --wait is 5 minutes), while the run goes on.
func TestClusterWorkerRefusedExits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	data, dir := preparedSet(t), t.TempDir()
	co, addr := startCoordinator(t, data, dir, nil, "epochs=1000000")
	w0 := startWorker(t, addr, "w0")
	co.waitFor(t, reStep, 0, 30*time.Second)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plaintext", []string{"--name", "w1", "--plaintext", "--tls-dir="}, "speaks TLS, but this worker runs with --plaintext"},
		{"duplicate", []string{"--name", "w0"}, `a worker named "w0"`},
	} {
		start := time.Now()
		p := startProc(t, tc.name, append([]string{"worker", "join", "--threads", "1", "--coordinator", addr}, tc.args...)...)
		err := p.wait(t, 30*time.Second)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitRefused {
			t.Errorf("%s: the worker ended with %v, want exit status %d", tc.name, err, exitRefused)
		}
		if !strings.Contains(p.output(), tc.want) {
			t.Errorf("%s: the worker's output does not say %q:\n%s", tc.name, tc.want, p.output())
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("%s: took %v to exit", tc.name, took)
		}
	}
	select {
	case <-w0.done:
		t.Errorf("w0 ended (%v) while others were refused", w0.err)
	default:
	}
	co.cmd.Process.Signal(syscall.SIGTERM)
	co.wait(t, 30*time.Second)
}

// TestClusterCertsRefusesWorkTree: tinct cluster certs does not write the
// CA's private key into a git work tree (one git add -A commits it) unless
// --in-work-tree says so.
func TestClusterCertsRefusesWorkTree(t *testing.T) {
	repo := t.TempDir()
	os.Mkdir(filepath.Join(repo, ".git"), 0o755)
	out := filepath.Join(repo, "sub", "certs")
	certs := func(more ...string) error {
		c := newClusterCmd()
		c.SetArgs(append([]string{"certs", "--out", out, "--host", "127.0.0.1"}, more...))
		c.SetOut(io.Discard)
		c.SetErr(io.Discard)
		return c.Execute()
	}
	if err := certs(); err == nil || !strings.Contains(err.Error(), repo) || !strings.Contains(err.Error(), "--in-work-tree") {
		t.Errorf("--out in a work tree: %v, want a refusal naming %s and --in-work-tree", err, repo)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the refused command left %s (%v)", out, err)
	}
	if err := certs("--in-work-tree"); err != nil {
		t.Errorf("--in-work-tree: %v", err)
	}
}

// TestClusterRunHint: a cluster run that finishes names the coordinator's
// command in its closing hint, not tinct train.
func TestClusterRunHint(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	data, dir := preparedSet(t), t.TempDir()
	co, addr := startCoordinator(t, data, dir, nil, "epochs=2")
	w := startWorker(t, addr, "w0")
	if err := co.wait(t, 60*time.Second); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	if out := co.output(); !strings.Contains(out, "the same tinct coordinator start command") || strings.Contains(out, "tinct train") {
		t.Errorf("the closing hint does not name tinct coordinator start:\n%s", out)
	}
	w.wait(t, 20*time.Second)
}
