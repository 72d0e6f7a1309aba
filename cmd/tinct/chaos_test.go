//go:build chaos

package main

// make chaos (not in CI): one training run on a cluster of real processes —
// a coordinator and four workers over mutual TLS on 127.0.0.1 — under
// CHAOS_FAULTS (default 110) mixed faults: workers killed with SIGKILL and
// started again under the same name (a fifth of them at once), workers
// stopped with SIGSTOP for 0.3-8 s (past the ring timeout, and past it and
// the setup timeout, when the coordinator drops them), floods
// of junk on every port of the cluster (the coordinator's gRPC, every
// worker's all-reduce server, every memberlist port over TCP and UDP) and
// coordinator kills (SIGKILL) followed by a restart with resume=auto on the
// same address. It checks that every step was committed exactly once in the
// final record (each coordinator's commits up to the checkpoint the next
// one resumed from, then the last one's) and that the final checkpoint is
// bitwise equal to a fault-free run of the same configuration and seed.
//
// The batch is 3 examples and the cluster 4 workers, so every ring has 3
// members and one worker waits as a spare: BatchNorm's statistics are per
// share, so only runs with the same number of shares are bitwise equal
// (docs/design.md), and with min-workers 3 a step is always computed by 3.
//
// Knobs: CHAOS_FAULTS, CHAOS_SEED (the fault schedule's; default 1),
// CHAOS_EPOCHS (default 500 of 6 steps, more for more than 110 faults),
// CHAOS_JSON (the summary file, default bench/chaos.json; "-" for none),
// CHAOS_KEEP=1 keeps the processes' logs (kept anyway when the test fails).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/trainstate"
)

const (
	chaosWorkers     = 4
	chaosBatch       = 3 // the ring's size: 18 training images, 6 steps an epoch
	chaosSPE         = 6
	chaosRingTimeout = 1500 * time.Millisecond
	chaosSetup       = 2 * time.Second
	chaosMaxStop     = 8 * time.Second
)

// Fault kinds, as counted in the summary.
const (
	faultWorkerKill = "worker_sigkill"
	faultWorkerStop = "worker_sigstop"
	faultJunk       = "junk_flood"
	faultCoordKill  = "coordinator_sigkill"
)

var (
	reRingFormed = regexp.MustCompile(`ring formed"? generation=\d+ workers="?\[([^\]]*)\]`)
	reRingAddr   = regexp.MustCompile(`ring generation"? .*addr=(127\.0\.0\.1:\d+)`)
	reResumed    = regexp.MustCompile(`msg=resumed .*step=(\d+)`)
	reNewRun     = regexp.MustCompile(`starting a new run|starting afresh`)
	reConnected  = regexp.MustCompile(`worker connected"? worker=(\S+)`)
	reDropped    = regexp.MustCompile(`worker dropped; it may rejoin with a fresh state"? worker=(\S+)`)
	reAbandoned  = regexp.MustCompile(`step abandoned`)
	reExcluded   = regexp.MustCompile(`worker excluded`)
	reSuspect    = regexp.MustCompile(`memberlist: worker failed or left`)
	reCkptSaved  = regexp.MustCompile(`checkpoint saved`)
)

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

// cproc is one incarnation of a tinct process of the chaos run, its output
// also written to a log file.
type cproc struct {
	*proc
	label  string
	killed atomic.Bool // the harness sent it SIGKILL
	// exitSeen is when watch first saw it ended by itself (under chaosRun.mu)
	exitSeen time.Time
}

// lines returns a copy of the output lines from index i on.
func (p *cproc) linesFrom(i int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i >= len(p.lines) {
		return nil
	}
	return slices.Clone(p.lines[i:])
}

func (p *cproc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the last n lines of the output.
func (p *cproc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-n):], "\n")
}

// slot is one worker name and its incarnations.
type slot struct {
	name, gossip string
	state        string // "up", "stopped" (SIGSTOP), "down" (killed, not yet started again)
	incs         []*cproc
	scan         int    // lines of the current incarnation read for ring addresses
	ringAddr     string // the newest ring server address in its logs
}

func (s *slot) cur() *cproc { return s.incs[len(s.incs)-1] }

type faultRecord struct {
	kind   string
	at     time.Time
	hw     int64 // the highest committed step when it happened
	recovS float64
}

// chaosRun is one cluster: a coordinator (incarnations in cos) and
// chaosWorkers workers on fixed addresses.
type chaosRun struct {
	t        *testing.T
	label    string
	ctx      context.Context
	cancel   context.CancelFunc
	logDir   string
	certs    string
	data     string
	dir      string
	coAddr   string
	coGossip string
	coArgs   []string
	epochs   int

	mu        sync.Mutex
	closing   bool
	all       []*cproc
	cos       []*cproc
	coScan    int
	slots     []*slot
	hw        int64 // the highest step any coordinator committed
	lastRing  []string
	faults    []*faultRecord
	failures  []string // unexpected exits seen while the run goes on
	schedule  *os.File
	t0        time.Time
	junkStats junkStats
	wg        sync.WaitGroup // fault goroutines: restarts, SIGCONTs, junk
}

type junkStats struct {
	tcp map[string]*atomic.Int64 // connections by kind
	udp atomic.Int64             // datagrams
}

var errClosing = errors.New("the run is being torn down")

// freePort is a 127.0.0.1 address below the ephemeral range (so that no
// outgoing connection takes it while a process is down) free for TCP and UDP.
func freePort(t *testing.T, rng *rand.Rand, taken map[string]bool) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rng.IntN(12000))
		if taken[addr] {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		taken[addr] = true
		return addr
	}
	t.Fatal("no free port for TCP and UDP")
	return ""
}

func newChaosRun(t *testing.T, label, data, logDir string, epochs int, rng *rand.Rand, taken map[string]bool) *chaosRun {
	r := &chaosRun{t: t, label: label, logDir: logDir, certs: testCerts(t), data: data, dir: t.TempDir(), epochs: epochs}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.coAddr, r.coGossip = freePort(t, rng, taken), freePort(t, rng, taken)
	r.junkStats.tcp = map[string]*atomic.Int64{}
	for _, k := range junkKinds {
		r.junkStats.tcp[k] = new(atomic.Int64)
	}
	for i := range chaosWorkers {
		r.slots = append(r.slots, &slot{name: fmt.Sprintf("w%d", i), gossip: freePort(t, rng, taken)})
	}
	r.coArgs = []string{"coordinator", "start", "-v", "--threads", "1", "--listen", r.coAddr, "--gossip", r.coGossip,
		"--min-workers", strconv.Itoa(chaosBatch), "--wait", "3m", "--step-timeout", "5s", "--setup-timeout", chaosSetup.String(),
		"--ring-timeout", chaosRingTimeout.String(), "--backoff", "100ms", "--max-failures", "1000000",
		"dataset=" + data, "image_size=8", "model.widths=[4,8]", "batch_size=" + strconv.Itoa(chaosBatch), "sample_every=0",
		"checkpoint_every=3", "keep_last=3", "resume=auto", "seed=3", fmt.Sprintf("epochs=%d", epochs),
		"output_dir=" + filepath.Join(r.dir, "runs"), "store=" + filepath.Join(r.dir, "ckpt")}
	var err error
	if r.schedule, err = os.Create(filepath.Join(logDir, label+"-schedule.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.teardown)
	return r
}

// teardown kills whatever still runs and, when the test failed, shows the
// end of every process's log.
func (r *chaosRun) teardown() {
	r.cancel()
	r.mu.Lock()
	r.closing = true
	all := slices.Clone(r.all)
	r.mu.Unlock()
	for _, p := range all {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.done
		<-p.eof
	}
	r.wg.Wait()
	r.schedule.Close()
	if r.t.Failed() {
		if len(r.cos) > 0 {
			r.t.Logf("--- %s: the last coordinator's log (%s) ends:\n%s", r.label, r.cos[len(r.cos)-1].label, r.cos[len(r.cos)-1].tail(40))
		}
		for _, s := range r.slots {
			if len(s.incs) > 0 {
				r.t.Logf("--- %s: %s's log ends:\n%s", r.label, s.cur().label, s.cur().tail(15))
			}
		}
	}
}

// logf writes a line to the schedule log and the test's log.
func (r *chaosRun) logf(format string, args ...any) {
	msg := fmt.Sprintf("%7.2fs  ", time.Since(r.t0).Seconds()) + fmt.Sprintf(format, args...)
	fmt.Fprintln(r.schedule, msg)
	r.t.Log(r.label + ": " + msg)
}

// spawn starts a tinct process (this test binary re-executed) whose output
// goes to logDir/label.log as well.
func (r *chaosRun) spawn(label string, args ...string) (*cproc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return nil, errClosing
	}
	f, err := os.Create(filepath.Join(r.logDir, label+".log"))
	if err != nil {
		return nil, err
	}
	pp, err := startTinct(label, r.certs, f, args...)
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &cproc{proc: pp, label: label}
	r.all = append(r.all, p)
	return p, nil
}

// startCoordinator starts a coordinator incarnation and waits until it
// listens.
func (r *chaosRun) startCoordinator() *cproc {
	r.t.Helper()
	label := fmt.Sprintf("%s-coordinator-%d", r.label, len(r.cos)+1)
	p, err := r.spawn(label, r.coArgs...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.cos = append(r.cos, p)
	r.coScan = 0
	r.mu.Unlock()
	p.waitFor(r.t, reListen, 0, 60*time.Second)
	return p
}

// startWorker starts a new incarnation of slot s.
func (r *chaosRun) startWorker(s *slot) error {
	label := fmt.Sprintf("%s-%s-%d", r.label, s.name, len(s.incs)+1)
	p, err := r.spawn(label, "worker", "join", "--threads", "1", "--coordinator", r.coAddr, "--name", s.name, "--gossip", s.gossip)
	if err != nil {
		return err
	}
	r.mu.Lock()
	s.incs = append(s.incs, p)
	s.scan, s.state = 0, "up"
	r.mu.Unlock()
	return nil
}

// watch follows the logs: the highest committed step, the newest ring, each
// worker's ring address; and notices processes that end unasked.
func (r *chaosRun) watch(done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		if len(r.cos) > 0 {
			co := r.cos[len(r.cos)-1]
			ls := co.linesFrom(r.coScan)
			r.coScan += len(ls)
			for _, l := range ls {
				if m := reStep.FindStringSubmatch(l); m != nil {
					if n, _ := strconv.ParseInt(m[1], 10, 64); n > r.hw {
						r.hw = n
						now := time.Now()
						for _, f := range r.faults {
							if f.recovS == 0 && n > f.hw {
								f.recovS = now.Sub(f.at).Seconds()
							}
						}
					}
				} else if m := reRingFormed.FindStringSubmatch(l); m != nil {
					r.lastRing = strings.Fields(m[1])
				}
			}
		}
		for _, s := range r.slots {
			if len(s.incs) == 0 {
				continue
			}
			p := s.cur()
			ls := p.linesFrom(s.scan)
			s.scan += len(ls)
			for _, l := range ls {
				if m := reRingAddr.FindStringSubmatch(l); m != nil {
					s.ringAddr = m[1]
				}
			}
			if s.state == "down" || !p.exited() || p.killed.Load() || r.closing {
				continue
			}
			// a worker ends by itself only when training is finished, with
			// status 0 (the coordinator's log may say so a moment later)
			if p.exitSeen.IsZero() {
				p.exitSeen = time.Now()
			}
			if p.err != nil || (!r.finishing() && time.Since(p.exitSeen) > 5*time.Second) {
				r.failures = append(r.failures, fmt.Sprintf("%s exited by itself (%v) while training went on; its log ends:\n%s", p.label, p.err, p.tail(20)))
				s.state = "down"
			}
		}
		r.mu.Unlock()
	}
}

// finishing: the current coordinator has said training is finished (its
// workers then exit by themselves). Called with r.mu held.
func (r *chaosRun) finishing() bool {
	if len(r.cos) == 0 {
		return false
	}
	co := r.cos[len(r.cos)-1]
	co.mu.Lock()
	defer co.mu.Unlock()
	for i := len(co.lines) - 1; i >= max(0, len(co.lines)-200); i-- {
		if strings.Contains(co.lines[i], "training finished") {
			return true
		}
	}
	return co.exited() && co.err == nil
}

func (r *chaosRun) sleep(d time.Duration) bool {
	select {
	case <-r.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// checkAlive fails the test when a process ended unasked, or the
// coordinator ended before the faults were all made.
func (r *chaosRun) checkAlive(faultsDone, faultsWanted int) {
	r.t.Helper()
	r.mu.Lock()
	failures := slices.Clone(r.failures)
	co := r.cos[len(r.cos)-1]
	r.mu.Unlock()
	if len(failures) > 0 {
		r.t.Fatalf("%s", strings.Join(failures, "\n\n"))
	}
	if co.exited() && !co.killed.Load() {
		<-co.eof
		if co.err != nil {
			r.t.Fatalf("%s exited with %v; its log ends:\n%s", co.label, co.err, co.tail(40))
		}
		r.t.Fatalf("training finished after %d of %d faults: raise CHAOS_EPOCHS", faultsDone, faultsWanted)
	}
}

// --- faults ---

func (r *chaosRun) addFault(kind string) *faultRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := &faultRecord{kind: kind, at: time.Now(), hw: r.hw}
	r.faults = append(r.faults, f)
	return f
}

// pickWorker picks a running worker, a member of the newest ring three
// times in four; nil when none is up or two are down already.
func (r *chaosRun) pickWorker(rng *rand.Rand) *slot {
	r.mu.Lock()
	defer r.mu.Unlock()
	var up, inRing []*slot
	impaired := 0
	for _, s := range r.slots {
		if s.state != "up" {
			impaired++
			continue
		}
		up = append(up, s)
		if slices.Contains(r.lastRing, s.name) {
			inRing = append(inRing, s)
		}
	}
	if impaired >= 2 || len(up) == 0 {
		return nil
	}
	if len(inRing) > 0 && rng.IntN(4) > 0 {
		return inRing[rng.IntN(len(inRing))]
	}
	return up[rng.IntN(len(up))]
}

// killWorker sends SIGKILL to s and starts it again under the same name
// after delay (at once for 0).
func (r *chaosRun) killWorker(s *slot, delay time.Duration, why string) {
	r.t.Helper()
	r.mu.Lock()
	p := s.cur()
	s.state = "down"
	r.mu.Unlock()
	if p.exited() {
		r.t.Fatalf("%s had exited (%v) before the harness killed it; its log ends:\n%s", p.label, p.err, p.tail(20))
	}
	r.addFault(faultWorkerKill)
	p.killed.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	r.logf("fault %d: SIGKILL %s (%s), start it again after %v", len(r.faults), p.label, why, delay.Round(time.Millisecond))
	r.wg.Go(func() {
		<-p.done
		if delay > 0 && !r.sleep(delay) {
			return
		}
		if err := r.startWorker(s); err != nil && !errors.Is(err, errClosing) {
			r.mu.Lock()
			r.failures = append(r.failures, fmt.Sprintf("start %s again: %v", s.name, err))
			r.mu.Unlock()
		}
	})
}

// stopWorker sends SIGSTOP to s and SIGCONT after d.
func (r *chaosRun) stopWorker(s *slot, d time.Duration) {
	r.mu.Lock()
	p := s.cur()
	s.state = "stopped"
	r.mu.Unlock()
	if p.exited() {
		r.t.Fatalf("%s had exited (%v) before the harness stopped it; its log ends:\n%s", p.label, p.err, p.tail(20))
	}
	r.addFault(faultWorkerStop)
	_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	past := ""
	switch {
	case d > chaosRingTimeout+chaosSetup:
		past = " (past the ring timeout and the setup timeout)"
	case d > chaosRingTimeout:
		past = " (past the ring timeout)"
	}
	r.logf("fault %d: SIGSTOP %s for %v%s", len(r.faults), p.label, d.Round(time.Millisecond), past)
	r.wg.Go(func() {
		r.sleep(d)
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		r.mu.Lock()
		if s.state == "stopped" && s.cur() == p {
			s.state = "up"
		}
		r.mu.Unlock()
	})
}

// killCoordinator kills the coordinator with SIGKILL, waits, maybe kills a
// worker meanwhile, and starts a coordinator again on the same address
// with the same arguments (resume=auto).
func (r *chaosRun) killCoordinator(rng *rand.Rand) {
	r.t.Helper()
	r.mu.Lock()
	co := r.cos[len(r.cos)-1]
	r.mu.Unlock()
	if co.exited() {
		r.t.Fatalf("%s had exited (%v) before the harness killed it; its log ends:\n%s", co.label, co.err, co.tail(40))
	}
	r.addFault(faultCoordKill)
	co.killed.Store(true)
	_ = co.cmd.Process.Signal(syscall.SIGKILL)
	<-co.done
	<-co.eof
	down := time.Duration(300+rng.IntN(1700)) * time.Millisecond
	r.logf("fault %d: SIGKILL %s at step %d (highest committed %d), start it again after %v", len(r.faults), co.label, lastCommitted(co), r.highest(), down)
	half := down / 2
	if !r.sleep(half) {
		return
	}
	if rng.IntN(2) == 0 {
		if s := r.pickWorker(rng); s != nil {
			r.killWorker(s, time.Duration(rng.IntN(1500))*time.Millisecond, "while the coordinator is down")
		}
	}
	if !r.sleep(down - half) {
		return
	}
	p := r.startCoordinator()
	_, m := p.waitFor(r.t, regexp.MustCompile(`msg=resumed .*step=(\d+)|starting a new run|starting afresh`), 0, 30*time.Second)
	r.logf("%s listening on %s, %s", p.label, r.coAddr, strings.TrimSpace(m[0]))
}

func (r *chaosRun) highest() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hw
}

func lastCommitted(p *cproc) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.lines) - 1; i >= 0; i-- {
		if m := reStep.FindStringSubmatch(p.lines[i]); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			return n
		}
	}
	return 0
}

// junkKinds are the kinds of junk TCP connections.
var junkKinds = []string{"random_bytes", "half_open", "garbage_client_hello", "tls_without_cert", "mtls_then_garbage", "http", "reset"}

// junkFlood sends junk to every port of the cluster for d: over TCP to the
// coordinator's gRPC port, every memberlist port and every worker's
// all-reduce server (the newest address in its logs: the server listens
// afresh for every ring generation), and random datagrams to every
// memberlist port.
func (r *chaosRun) junkFlood(rng *rand.Rand, d time.Duration, mtls *tls.Config) {
	r.mu.Lock()
	tcp := []string{r.coAddr, r.coGossip}
	udp := []string{r.coGossip}
	rings := 0
	for _, s := range r.slots {
		tcp = append(tcp, s.gossip)
		udp = append(udp, s.gossip)
		if s.ringAddr != "" {
			tcp = append(tcp, s.ringAddr)
			rings++
		}
	}
	r.mu.Unlock()
	r.addFault(faultJunk)
	r.logf("fault %d: junk for %v on %d TCP ports (coordinator gRPC, 5 memberlist, %d all-reduce) and %d UDP ports", len(r.faults), d.Round(time.Millisecond), len(tcp), rings, len(udp))
	end := time.Now().Add(d)
	for i, addr := range tcp {
		seed := rng.Uint64()
		r.wg.Go(func() { r.junkTCP(addr, end, rand.New(rand.NewPCG(seed, uint64(i))), mtls) })
	}
	for i, addr := range udp {
		seed := rng.Uint64()
		r.wg.Go(func() { r.junkUDP(addr, end, rand.New(rand.NewPCG(seed, uint64(100+i)))) })
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

func (r *chaosRun) junkTCP(addr string, end time.Time, rng *rand.Rand, mtls *tls.Config) {
	var held sync.WaitGroup
	defer held.Wait()
	open := 0
	for time.Now().Before(end) && r.ctx.Err() == nil {
		kind := junkKinds[rng.IntN(len(junkKinds))]
		if kind == "half_open" && open >= 16 {
			kind = "random_bytes"
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			time.Sleep(20 * time.Millisecond) // a process down: its port is closed
			continue
		}
		r.junkStats.tcp[kind].Add(1)
		_ = c.SetDeadline(time.Now().Add(time.Second))
		switch kind {
		case "random_bytes":
			_, _ = c.Write(randBytes(rng, 1+rng.IntN(4096)))
		case "half_open":
			// connect, maybe start a TLS record, and say nothing more for a while
			if rng.IntN(2) == 0 {
				_, _ = c.Write([]byte{0x16, 0x03, 0x01})
			}
			hold := time.Duration(200+rng.IntN(1800)) * time.Millisecond
			open++
			held.Go(func() {
				select {
				case <-time.After(hold):
				case <-r.ctx.Done():
				}
				c.Close()
			})
			time.Sleep(5 * time.Millisecond)
			continue
		case "garbage_client_hello":
			body := append([]byte{0x03, 0x03}, randBytes(rng, 32+rng.IntN(400))...)
			hs := append([]byte{0x01, 0, byte(len(body) >> 8), byte(len(body))}, body...)
			rec := append([]byte{0x16, 0x03, 0x01, byte(len(hs) >> 8), byte(len(hs))}, hs...)
			_, _ = c.Write(rec)
			_, _ = io.CopyN(io.Discard, c, 1<<16)
		case "tls_without_cert":
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			if tc.HandshakeContext(r.ctx) == nil {
				_, _ = tc.Write(randBytes(rng, 1+rng.IntN(1024)))
			}
			_ = tc.Close()
		case "mtls_then_garbage":
			// a peer holding a certificate of the cluster's CA, sending
			// garbage inside the TLS session (after HTTP/2's preface, half the time)
			tc := tls.Client(c, mtls)
			if tc.HandshakeContext(r.ctx) == nil {
				if rng.IntN(2) == 0 {
					_, _ = tc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
				}
				_, _ = tc.Write(randBytes(rng, 1+rng.IntN(2048)))
			}
			_ = tc.Close()
		case "http":
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + string(randBytes(rng, rng.IntN(256)))))
		case "reset":
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		c.Close()
		time.Sleep(time.Duration(2+rng.IntN(8)) * time.Millisecond)
	}
}

func (r *chaosRun) junkUDP(addr string, end time.Time, rng *rand.Rand) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	for time.Now().Before(end) && r.ctx.Err() == nil {
		for range 1 + rng.IntN(8) {
			if _, err := c.Write(randBytes(rng, 1+rng.IntN(1400))); err == nil {
				r.junkStats.udp.Add(1)
			}
		}
		time.Sleep(time.Duration(2+rng.IntN(8)) * time.Millisecond)
	}
}

// mtlsConfig is a client TLS configuration with the cluster's certificate.
func mtlsConfig(t *testing.T, dir string) *tls.Config {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, InsecureSkipVerify: true, NextProtos: []string{"h2"}}
}

// --- the end of a run ---

// incarnation is what one coordinator process committed.
type incarnation struct {
	label                                                                string
	from                                                                 int64   // the checkpoint step it resumed from (0: a new run)
	commits                                                              []int64 // the steps it logged as committed, in order
	rings, abandoned, dropped, lost, backoffs, excluded, saved, suspects int
}

func parseIncarnation(t *testing.T, p *cproc) incarnation {
	in := incarnation{label: p.label, from: -1}
	for _, l := range p.linesFrom(0) {
		switch {
		case reStep.MatchString(l):
			in.commits = append(in.commits, int64(mustAtoi(reStep.FindStringSubmatch(l)[1])))
		case reResumed.MatchString(l) && in.from < 0:
			in.from = int64(mustAtoi(reResumed.FindStringSubmatch(l)[1]))
		case reNewRun.MatchString(l) && in.from < 0:
			in.from = 0
		case reRingFormed.MatchString(l):
			in.rings++
		case reAbandoned.MatchString(l):
			in.abandoned++
		case reDropped.MatchString(l):
			in.dropped++
		case reLost.MatchString(l):
			in.lost++
		case reFailed.MatchString(l):
			in.backoffs++
		case reExcluded.MatchString(l):
			in.excluded++
		case reCkptSaved.MatchString(l):
			in.saved++
		case reSuspect.MatchString(l):
			in.suspects++
		}
	}
	if in.from < 0 {
		t.Errorf("%s: no \"resumed\" or \"starting a new run\" line", p.label)
		in.from = 0
	}
	return in
}

// checkRecord checks the committed steps of every coordinator incarnation:
// each commits the steps after the checkpoint it resumed from, in order,
// once each; the next one resumes from a checkpoint at or after that one and
// no later than the last step it committed; the last one commits up to
// total. The final record — each incarnation's steps up to where the next
// resumed, then the last one's — is then every step 1..total once. It
// returns the steps computed again after a coordinator kill.
func checkRecord(t *testing.T, ins []incarnation, total int64) (recomputed int64) {
	t.Helper()
	final := map[int64]int{}
	for k, in := range ins {
		for j, s := range in.commits {
			if want := in.from + 1 + int64(j); s != want {
				t.Errorf("%s: commit %d is step %d, want %d (it resumed at %d)", in.label, j+1, s, want, in.from)
				break
			}
		}
		end := in.from + int64(len(in.commits))
		upTo := total
		if k+1 < len(ins) {
			next := ins[k+1].from
			if next < in.from || next > end {
				t.Errorf("%s resumed at step %d; %s resumed at %d and committed up to %d", ins[k+1].label, next, in.label, in.from, end)
			}
			upTo = next
			recomputed += end - next
		} else if end != total {
			t.Errorf("%s: committed up to step %d, want %d", in.label, end, total)
		}
		for _, s := range in.commits {
			if s <= upTo {
				final[s]++
			}
		}
	}
	for s := int64(1); s <= total; s++ {
		if final[s] != 1 {
			t.Errorf("step %d committed %d times in the final record", s, final[s])
		}
	}
	if int64(len(final)) != total {
		t.Errorf("%d distinct steps in the final record, want %d", len(final), total)
	}
	return recomputed
}

// finalState loads the store's newest checkpoint: the bytes of the parts
// that are the training state, and trainstate's checksum of it.
func finalState(t *testing.T, store string) (*checkpoint.Checkpoint, []byte) {
	t.Helper()
	ck := latestCheckpoint(t, store)
	cfg, err := config.Parse(ck.Parts[trainstate.PartConfig], nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := trainstate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Restore(ck, nil); err != nil {
		t.Fatal(err)
	}
	return ck, st.Checksum()
}

// stateParts are the checkpoint parts that hold the training state: the
// weights with the BatchNorm buffers, the EMA, Adam's moments and step, and
// the loop position (step, epoch, the epoch's loss so far, the seed).
var stateParts = []string{trainstate.PartWeights, trainstate.PartEMA, trainstate.PartOptimizer, trainstate.PartPosition}

// run starts the coordinator and the workers and, with faults, runs the
// fault schedule while they train; it returns when the coordinator has
// finished and every worker exited.
func (r *chaosRun) run(faults int, rng *rand.Rand) time.Duration {
	t := r.t
	r.t0 = time.Now()
	watched := make(chan struct{})
	go r.watch(watched)
	r.startCoordinator()
	for _, s := range r.slots {
		if err := r.startWorker(s); err != nil {
			t.Fatal(err)
		}
	}
	total := int64(r.epochs * chaosSPE)
	if faults > 0 {
		r.schedule1(faults, total, rng)
	}
	// the end: the coordinator finishes, every worker exits 0
	var co *cproc
	for {
		r.mu.Lock()
		co = r.cos[len(r.cos)-1]
		failures := slices.Clone(r.failures)
		r.mu.Unlock()
		if len(failures) > 0 {
			t.Fatalf("%s", strings.Join(failures, "\n\n"))
		}
		if co.exited() {
			break
		}
		if time.Since(r.t0) > 30*time.Minute {
			t.Fatalf("%s: still training after %v", co.label, time.Since(r.t0).Round(time.Second))
		}
		time.Sleep(50 * time.Millisecond)
	}
	wall := time.Since(r.t0)
	<-co.eof
	if co.err != nil {
		t.Fatalf("%s: %v; its log ends:\n%s", co.label, co.err, co.tail(40))
	}
	r.wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range r.slots {
		p := s.cur()
		select {
		case <-p.done:
		case <-time.After(time.Until(deadline)):
			if connectedAtEnd(co, s.name) {
				t.Errorf("%s was connected when training finished but did not exit; its log ends:\n%s", p.label, p.tail(20))
				continue
			}
			// it was between two sessions when the coordinator finished:
			// nothing can tell it, and it would wait --wait for it
			r.logf("%s was not connected when training finished: SIGTERM", p.label)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
		}
		<-p.eof
		if p.err != nil {
			t.Errorf("%s exited with %v; its log ends:\n%s", p.label, p.err, p.tail(20))
		}
	}
	// every earlier incarnation ended by the harness's SIGKILL
	for _, s := range r.slots {
		for _, p := range s.incs[:len(s.incs)-1] {
			if !p.killed.Load() {
				t.Errorf("%s ended (%v) without the harness killing it; its log ends:\n%s", p.label, p.err, p.tail(20))
			}
		}
	}
	r.cancel()
	<-watched
	return wall
}

// schedule1 makes faults faults while the run trains: fault i once the
// highest committed step passes (4 + 71·i/(faults-1))% of total, so they
// are spread over the run and its last quarter is quiet; the coordinator is
// killed max(3, faults/30) times, evenly spread; the other faults are a
// worker's SIGKILL (half), SIGSTOP (a quarter) or a junk flood (a quarter).
func (r *chaosRun) schedule1(faults int, total int64, rng *rand.Rand) {
	t := r.t
	coKills := max(3, faults/30)
	var coAt []int // a coordinator kill once this many faults are made
	for k := range coKills {
		coAt = append(coAt, (2*k+1)*faults/(2*coKills))
	}
	mtls := mtlsConfig(t, r.certs)
	planned := 0
	for i := 0; planned < faults; i++ {
		target := int64(float64(total) * (0.04 + 0.71*float64(min(i, faults-1))/float64(max(faults-1, 1))))
		lastProgress, last := time.Now(), r.highest()
		for {
			r.checkAlive(planned, faults)
			hw := r.highest()
			if hw >= target {
				break
			}
			if hw > last {
				lastProgress, last = time.Now(), hw
			}
			if time.Since(lastProgress) > 3*time.Minute {
				t.Fatalf("no step committed for 3 minutes (highest %d)", hw)
			}
			time.Sleep(10 * time.Millisecond)
		}
		r.sleep(time.Duration(rng.IntN(250)) * time.Millisecond)
		r.checkAlive(planned, faults)
		kind := faultJunk
		switch p := rng.Float64(); {
		case len(coAt) > 0 && planned >= coAt[0]:
			kind, coAt = faultCoordKill, coAt[1:]
		case p < 0.5:
			kind = faultWorkerKill
		case p < 0.75:
			kind = faultWorkerStop
		}
		var s *slot
		if kind == faultWorkerKill || kind == faultWorkerStop {
			// wait (a little) for a worker to pick: at most two are down at once
			for range 100 {
				if s = r.pickWorker(rng); s != nil {
					break
				}
				r.sleep(50 * time.Millisecond)
			}
			if s == nil {
				kind = faultJunk
			}
		}
		n := len(r.faults)
		switch kind {
		case faultCoordKill:
			r.killCoordinator(rng)
		case faultWorkerKill:
			var delay time.Duration
			if rng.IntN(5) > 0 {
				delay = time.Duration(100+rng.IntN(2400)) * time.Millisecond
			}
			r.killWorker(s, delay, fmt.Sprintf("highest committed step %d", r.highest()))
		case faultWorkerStop:
			// short stops the ring waits out; long ones past the ring
			// timeout, and past the ring timeout and the setup timeout
			// together, which drop the worker
			d := time.Duration(300+rng.IntN(1200)) * time.Millisecond
			if rng.IntN(5) >= 2 {
				d = chaosRingTimeout + time.Duration(rng.Int64N(int64(chaosMaxStop-chaosRingTimeout)))
			}
			r.stopWorker(s, d)
		case faultJunk:
			r.junkFlood(rng, time.Duration(300+rng.IntN(1200))*time.Millisecond, mtls)
		}
		planned += len(r.faults) - n
	}
	r.logf("all %d faults made; training goes on to step %d", len(r.faults), total)
}

// connectedAtEnd: the coordinator's log has worker name connected (and
// not lost or dropped since) when training finished.
func connectedAtEnd(co *cproc, name string) bool {
	connected := false
	for _, l := range co.linesFrom(0) {
		if m := reConnected.FindStringSubmatch(l); m != nil && m[1] == name {
			connected = true
		} else if m := reLost.FindStringSubmatch(l); m != nil && m[1] == name {
			connected = false
		} else if m := reDropped.FindStringSubmatch(l); m != nil && m[1] == name {
			connected = false
		}
	}
	return connected
}

type recoveryStat struct {
	N       int     `json:"n"`
	MedianS float64 `json:"median_s"`
	MaxS    float64 `json:"max_s"`
}

type chaosReport struct {
	Date       string `json:"date"`
	Machine    string `json:"machine"`
	Go         string `json:"go"`
	Seed       uint64 `json:"seed"`
	TLS        bool   `json:"tls"`
	Workers    int    `json:"workers"`
	RingSize   int    `json:"ring_size"`
	Model      string `json:"model"`
	Epochs     int    `json:"epochs"`
	StepsEpoch int    `json:"steps_per_epoch"`
	Steps      int64  `json:"steps"`

	Faults            int                     `json:"faults"`
	FaultsByKind      map[string]int          `json:"faults_by_kind"`
	RestartsAtOnce    int                     `json:"worker_restarts_at_once"`
	StopsPastRingTO   int                     `json:"sigstops_past_ring_timeout"`
	StopsPastSetup    int                     `json:"sigstops_past_ring_and_setup_timeouts"`
	SetupTimeoutS     float64                 `json:"setup_timeout_s"`
	RingTimeoutS      float64                 `json:"ring_timeout_s"`
	JunkTCP           map[string]int          `json:"junk_tcp_connections"`
	JunkUDP           int                     `json:"junk_udp_datagrams"`
	FirstProgressS    map[string]recoveryStat `json:"progress_after_fault"`
	Coordinators      int                     `json:"coordinator_incarnations"`
	ResumedAt         []int64                 `json:"resumed_at_step"`
	WorkerProcesses   int                     `json:"worker_processes"`
	CommitLines       int                     `json:"commit_lines"`
	Recomputed        int64                   `json:"steps_recomputed_after_coordinator_kills"`
	RingsFormed       int                     `json:"rings_formed"`
	StepsAbandoned    int                     `json:"abandon_events"`
	WorkersLost       int                     `json:"workers_lost"`
	WorkersDropped    int                     `json:"workers_dropped"`
	Suspects          int                     `json:"memberlist_failed_reports"`
	Backoffs          int                     `json:"worker_backoffs"`
	CheckpointsSaved  int                     `json:"checkpoints_saved"`
	MissedFinish      int                     `json:"workers_not_connected_at_finish"`
	EveryStepOnce     bool                    `json:"every_step_committed_once"`
	BitwiseEqual      bool                    `json:"final_state_bitwise_equal"`
	StateChecksum     string                  `json:"state_checksum"`
	ChaosWallS        float64                 `json:"chaos_wall_s"`
	ReferenceWallS    float64                 `json:"fault_free_wall_s"`
	ReferenceAndChaos float64                 `json:"test_wall_s"`
}

// TestChaos: make chaos.
func TestChaos(t *testing.T) {
	start := time.Now()
	faults := envInt(t, "CHAOS_FAULTS", 110)
	seed := uint64(envInt(t, "CHAOS_SEED", 1))
	epochs := envInt(t, "CHAOS_EPOCHS", max(500, faults*9/2)) // about 20 steps between faults
	total := int64(epochs * chaosSPE)
	logDir, err := os.MkdirTemp("", "tinct-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CHAOS_KEEP") != "" {
			t.Logf("logs of every process and the fault schedule: %s", logDir)
			return
		}
		os.RemoveAll(logDir)
	})
	t.Logf("seed %d, %d faults, %d epochs of %d steps, %d workers (rings of %d), logs in %s", seed, faults, epochs, chaosSPE, chaosWorkers, chaosBatch, logDir)
	rng := rand.New(rand.NewPCG(seed, 0xc4a05))
	data := preparedSet(t)
	taken := map[string]bool{}

	// the fault-free run of the same configuration and seed
	ref := newChaosRun(t, "ref", data, logDir, epochs, rng, taken)
	refWall := ref.run(0, rng)
	if got := finalStep(t, filepath.Join(ref.dir, "ckpt")); got != total {
		t.Fatalf("fault-free run: final checkpoint at step %d, want %d", got, total)
	}
	committedSteps(t, ref.cos[0].proc, 1, int(total))
	t.Logf("fault-free run: %d steps in %v", total, refWall.Round(10*time.Millisecond))

	// the same under faults
	ch := newChaosRun(t, "chaos", data, logDir, epochs, rng, taken)
	chWall := ch.run(faults, rng)
	if t.Failed() {
		t.FailNow()
	}
	var ins []incarnation
	for _, co := range ch.cos {
		ins = append(ins, parseIncarnation(t, co))
	}
	recomputed := checkRecord(t, ins, total)
	once := !t.Failed()
	if got := finalStep(t, filepath.Join(ch.dir, "ckpt")); got != total {
		t.Errorf("final checkpoint at step %d, want %d", got, total)
	}
	refCk, refSum := finalState(t, filepath.Join(ref.dir, "ckpt"))
	chCk, chSum := finalState(t, filepath.Join(ch.dir, "ckpt"))
	equal := bytes.Equal(refSum, chSum)
	for _, part := range stateParts {
		if !bytes.Equal(refCk.Parts[part], chCk.Parts[part]) {
			equal = false
			t.Errorf("final checkpoint's %s differs from the fault-free run's (sha256 %x, fault-free %x)", part, sha256.Sum256(chCk.Parts[part]), sha256.Sum256(refCk.Parts[part]))
		}
	}
	if !bytes.Equal(refSum, chSum) {
		t.Errorf("final state checksum %x, fault-free run %x", chSum, refSum)
	}

	// the summary
	rep := chaosReport{Date: time.Now().UTC().Format("2006-01-02"), Machine: fmt.Sprintf("%d CPUs (%s/%s)", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH),
		Go: runtime.Version(), Seed: seed, TLS: true, Workers: chaosWorkers, RingSize: chaosBatch, Model: "image_size=8 widths=[4,8] batch_size=3, 18 training images",
		Epochs: epochs, StepsEpoch: chaosSPE, Steps: total, RingTimeoutS: chaosRingTimeout.Seconds(), SetupTimeoutS: chaosSetup.Seconds(),
		FaultsByKind: map[string]int{}, JunkTCP: map[string]int{}, FirstProgressS: map[string]recoveryStat{},
		Coordinators: len(ch.cos), Recomputed: recomputed, EveryStepOnce: once, BitwiseEqual: equal, StateChecksum: hex.EncodeToString(chSum),
		ChaosWallS: chWall.Seconds(), ReferenceWallS: refWall.Seconds(), ReferenceAndChaos: time.Since(start).Seconds()}
	rep.Faults = len(ch.faults)
	byKind := map[string][]float64{}
	for _, f := range ch.faults {
		rep.FaultsByKind[f.kind]++
		if f.recovS > 0 {
			byKind[f.kind] = append(byKind[f.kind], f.recovS)
		}
	}
	for k, v := range byKind {
		sort.Float64s(v)
		rep.FirstProgressS[k] = recoveryStat{N: len(v), MedianS: round3(v[len(v)/2]), MaxS: round3(v[len(v)-1])}
	}
	sched, _ := os.ReadFile(ch.schedule.Name())
	rep.RestartsAtOnce = strings.Count(string(sched), "start it again after 0s")
	rep.StopsPastSetup = strings.Count(string(sched), "(past the ring timeout and the setup timeout)")
	rep.StopsPastRingTO = strings.Count(string(sched), "(past the ring timeout") // both kinds
	for k, v := range ch.junkStats.tcp {
		rep.JunkTCP[k] = int(v.Load())
	}
	rep.JunkUDP = int(ch.junkStats.udp.Load())
	for _, in := range ins {
		rep.ResumedAt = append(rep.ResumedAt, in.from)
		rep.CommitLines += len(in.commits)
		rep.RingsFormed += in.rings
		rep.StepsAbandoned += in.abandoned
		rep.WorkersLost += in.lost
		rep.WorkersDropped += in.dropped
		rep.Suspects += in.suspects
		rep.Backoffs += in.backoffs
		rep.CheckpointsSaved += in.saved
		if in.excluded > 0 {
			t.Errorf("%s excluded a worker %d times", in.label, in.excluded)
		}
	}
	for _, s := range ch.slots {
		rep.WorkerProcesses += len(s.incs)
	}
	rep.MissedFinish = strings.Count(string(sched), "was not connected when training finished")
	t.Logf("chaos summary (seed %d): %d faults in %v of training — %d worker SIGKILLs (%d started again at once), %d SIGSTOPs (%d past the %v ring timeout, %d of them past it and the %v setup timeout), %d junk floods (%d TCP connections, %d UDP datagrams), %d coordinator SIGKILLs and restarts (resumed at steps %v)",
		seed, rep.Faults, chWall.Round(100*time.Millisecond), rep.FaultsByKind[faultWorkerKill], rep.RestartsAtOnce, rep.FaultsByKind[faultWorkerStop], rep.StopsPastRingTO, chaosRingTimeout, rep.StopsPastSetup, chaosSetup,
		rep.FaultsByKind[faultJunk], sum(rep.JunkTCP), rep.JunkUDP, rep.FaultsByKind[faultCoordKill], rep.ResumedAt[min(1, len(rep.ResumedAt)):])
	t.Logf("chaos summary: %d steps (%d epochs of %d), every step committed once in the final record: %v (%d commit lines, %d steps recomputed after coordinator kills); %d rings formed, %d abandon events, %d workers lost, %d dropped, %d reported failed by memberlist, %d back-offs, %d worker processes, %d checkpoints saved; %d workers not connected at the finish",
		total, epochs, chaosSPE, once, rep.CommitLines, recomputed, rep.RingsFormed, rep.StepsAbandoned, rep.WorkersLost, rep.WorkersDropped, rep.Suspects, rep.Backoffs, rep.WorkerProcesses, rep.CheckpointsSaved, rep.MissedFinish)
	t.Logf("chaos summary: final state (weights, BatchNorm buffers, EMA, Adam, position) bitwise equal to the fault-free run: %v (checksum %x); fault-free run %v, chaos run %v, whole test %v",
		equal, chSum, refWall.Round(100*time.Millisecond), chWall.Round(100*time.Millisecond), time.Since(start).Round(time.Second))
	for k, v := range rep.FirstProgressS {
		t.Logf("chaos summary: %s: first new commit after the fault, median %.2fs, max %.2fs (%d faults)", k, v.MedianS, v.MaxS, v.N)
	}
	if rep.Faults < faults {
		t.Errorf("%d faults made, want at least %d", rep.Faults, faults)
	}
	for _, k := range []string{faultWorkerKill, faultWorkerStop, faultJunk} {
		if faults >= 20 && rep.FaultsByKind[k] == 0 {
			t.Errorf("no fault of kind %s", k)
		}
	}
	if rep.FaultsByKind[faultCoordKill] < 3 && faults >= 3 {
		t.Errorf("%d coordinator kills, want at least 3", rep.FaultsByKind[faultCoordKill])
	}
	out := os.Getenv("CHAOS_JSON")
	if out == "" {
		out = filepath.Join("..", "..", "bench", "chaos.json")
	}
	if out != "-" && !t.Failed() {
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("summary written to %s", out)
	}
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
