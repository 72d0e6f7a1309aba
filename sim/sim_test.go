package sim

import (
	"math"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

func mustRun(t *testing.T, p Params) *Result {
	t.Helper()
	r, err := Run(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// small is a cluster that runs in milliseconds.
func small(n int, proto Protocol) Params {
	return Params{Workers: n, Protocol: proto, Warmup: 3, Steps: 8}
}

// short is the pipelined protocol with snapshots close together, so that
// small runs see several.
var short = Pipelined{InFlight: 2, Every: 4}

func TestDeterministic(t *testing.T) {
	for _, p := range []Params{
		small(4, Before{}),
		small(6, short),
		small(6, Pipelined{}),
		{Workers: 5, Protocol: Before{}, Jitter: 0.2, Seed: 7, Duration: 20 * time.Second, Fault: Fault{Every: 8 * time.Second, Mode: Crash, Rejoin: 3 * time.Second}},
		{Workers: 5, Protocol: short, Jitter: 0.2, Seed: 7, Duration: 20 * time.Second, Fault: Fault{Every: 8 * time.Second, Mode: Crash, Rejoin: 3 * time.Second}},
		{Workers: 5, Duration: 20 * time.Second, Fault: Fault{Every: 5 * time.Second, Mode: Kill, Rejoin: time.Second}},
	} {
		p.Trace = true
		a, b := mustRun(t, p), mustRun(t, p)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%+v: two runs differ:\n%+v\n%+v", p, a, b)
		}
		// the parallel runner gives the same results
		rs, err := RunAll([]Params{p, p}, 2)
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].Digest != a.Digest || rs[1].Digest != a.Digest {
			t.Errorf("RunAll's digests %x %x, Run's %x", rs[0].Digest, rs[1].Digest, a.Digest)
		}
	}
	// and a different seed of the stragglers changes them
	for _, proto := range []Protocol{Before{}, short} {
		p := Params{Workers: 5, Protocol: proto, Jitter: 0.2, Seed: 7, Warmup: 2, Steps: 5}
		q := p
		q.Seed = 8
		if mustRun(t, p).Digest == mustRun(t, q).Digest {
			t.Errorf("%s: the jitter's seed changes nothing", proto.Name())
		}
	}
}

var (
	setupRE     = regexp.MustCompile(`^ *[0-9.]+ setup gen=(\d+) ring=\[([^]]*)\]`)
	commitRE    = regexp.MustCompile(`^ *[0-9.]+ commit gen=(\d+) steps=(\d+)\.\.(\d+) workers=\[([^]]*)\]$`)
	committedRE = regexp.MustCompile(`^ *[0-9.]+ committed gen=(\d+) step=(\d+) workers=\[([^]]*)\] count=(\d+) of=(\d+)$`)
)

// commits checks a trace's commits: each Commit's steps follow the last
// one's, and the core answers its Applied with exactly those steps as
// Committed actions, right after it (nothing is handled in between), in
// order, each of its whole batch, by the ring of its generation; it
// returns how many steps were committed.
func commits(t *testing.T, r *Result, batch int) int {
	t.Helper()
	next := int64(-1)
	n := 0
	rings := map[string]string{}
	var open []string // the Commit being answered: gen, from, to, workers
	var want int64    // its next step
	for i, a := range r.Actions {
		if m := setupRE.FindStringSubmatch(a); m != nil {
			rings[m[1]] = m[2]
		}
		if m := commitRE.FindStringSubmatch(a); m != nil {
			if open != nil {
				t.Fatalf("a commit while the one of steps %s..%s is answered: %s", open[1], open[2], a)
			}
			from, _ := strconv.ParseInt(m[2], 10, 64)
			if next >= 0 && from != next {
				t.Fatalf("commit from step %d after step %d: %s", from, next-1, a)
			}
			if rings[m[1]] != m[4] {
				t.Fatalf("steps %s..%s committed by [%s], generation %s's ring is [%s]", m[2], m[3], m[4], m[1], rings[m[1]])
			}
			open, want = m, from
			continue
		}
		m := committedRE.FindStringSubmatch(a)
		if open == nil {
			if m != nil {
				t.Fatalf("committed without a commit: %s", a)
			}
			continue
		}
		if m == nil {
			if i == len(r.Actions)-1 || !strings.Contains(a, " finish") && !strings.Contains(a, " save ") && !strings.Contains(a, " epoch-done ") {
				t.Fatalf("%s while the commit of steps %s..%s is answered", a, open[1], open[2])
			}
			continue
		}
		step, _ := strconv.ParseInt(m[2], 10, 64)
		to, _ := strconv.ParseInt(open[3], 10, 64)
		from, _ := strconv.ParseInt(open[1+1], 10, 64)
		switch {
		case step != want:
			t.Fatalf("step %d committed, want step %d: %s", step, want, a)
		case m[1] != open[1] || m[3] != open[4]:
			t.Fatalf("step %d committed by generation %s [%s], its commit's is %s [%s]", step, m[1], m[3], open[1], open[4])
		case m[5] != strconv.FormatInt(to-from+1, 10):
			t.Fatalf("step %d: of=%s, its commit has steps %d..%d", step, m[5], from, to)
		}
		if c, _ := strconv.Atoi(m[4]); c != batch {
			t.Fatalf("step %d committed %d images of %d", step, c, batch)
		}
		want++
		next = step + 1
		n++
		if step == to {
			open = nil
		}
	}
	if n == 0 {
		t.Fatal("nothing committed")
	}
	return n
}

func TestEveryStepCommittedOnce(t *testing.T) {
	for _, p := range []Params{
		small(3, Before{}),
		small(5, short),
		{Workers: 5, Protocol: Pipelined{InFlight: 3, Every: 7}, Warmup: 3, Steps: 40},
		{Workers: 6, Protocol: Before{}, Duration: 30 * time.Second, Fault: Fault{Every: 7 * time.Second, Mode: Kill, Rejoin: 2 * time.Second}},
		{Workers: 6, Protocol: short, Duration: 30 * time.Second, Fault: Fault{Every: 7 * time.Second, Mode: Kill, Rejoin: 2 * time.Second}},
		{Workers: 6, Duration: 40 * time.Second, Fault: Fault{Every: 15 * time.Second, Mode: Crash, Rejoin: 4 * time.Second}},
		// a coordinator slower to load a snapshot than a step: reports and
		// deaths arrive while it loads, and wait for its Applied
		{Workers: 4, Protocol: short, SnapshotLoad: 400 * time.Millisecond, Duration: 20 * time.Second, Fault: Fault{Every: 3 * time.Second, Mode: Kill, Rejoin: time.Second}},
	} {
		p.Trace = true
		r := mustRun(t, p) // Run itself fails on a commit out of order or of a partial batch
		n := commits(t, r, p.Workers*32)
		if p.Fault.Every > 0 && (r.Abandons == 0 || r.StepsAbandoned == 0) {
			t.Errorf("%+v: a worker died in a step and nothing was abandoned", p.Fault)
		}
		if r.Steps == 0 || int64(n) < r.Steps || r.Commits == 0 {
			t.Errorf("%d steps committed in the trace, %d in the window, %d commits", n, r.Steps, r.Commits)
		}
	}
}

func TestSnapshotCadence(t *testing.T) {
	// the steady state: one commit of SnapshotEvery steps a period, the
	// window from commit to commit
	for _, pr := range []Pipelined{{InFlight: 2, Every: 5}, {InFlight: 1, Every: 3}, {InFlight: 4, Every: 10}, {}} {
		p := Params{Workers: 4, Protocol: pr, Warmup: 1, Steps: 3 * pr.SnapshotEvery(), Trace: true}
		r := mustRun(t, p)
		commits(t, r, 4*32)
		if r.Steps != int64(p.Steps) || r.Commits != 3 {
			t.Errorf("%s: %d steps in %d commits, want %d in 3", pr.Name(), r.Steps, r.Commits, p.Steps)
		}
		tasks := 0
		for _, a := range r.Actions {
			if !strings.Contains(a, " task w000 ") {
				continue
			}
			tasks++
			step, _ := strconv.Atoi(regexp.MustCompile(`step=(\d+)`).FindStringSubmatch(a)[1])
			snap := (step+1)%pr.SnapshotEvery() == 0
			if snap != strings.HasSuffix(a, " snapshot+state") {
				t.Errorf("%s: %s", pr.Name(), a)
			}
		}
		if tasks == 0 {
			t.Error("no tasks")
		}
		// the workers never wait for the coordinator, but for the snapshot's
		// round trip once a period with one step in flight
		if pr.Window() > 1 && r.Wait > time.Millisecond {
			t.Errorf("%s: waiting %v a step", pr.Name(), r.Wait)
		}
		if f := p; f.fill() == nil {
			if want := f.Protocol.SnapshotWork(&f, f.Net, false) / time.Duration(pr.SnapshotEvery()); r.Snapshot < want {
				t.Errorf("%s: snapshot work %v a step, at least %v", pr.Name(), r.Snapshot, want)
			}
		}
	}
}

func TestBusyFraction(t *testing.T) {
	for _, p := range []Params{
		small(1, Before{}), small(4, Before{}), small(16, short), small(16, Pipelined{}),
		{Workers: 2, Protocol: Before{}, FLOPS: 1e15, Warmup: 2, Steps: 5}, // nearly all communication
		{Workers: 2, Protocol: short, FLOPS: 1e15, Warmup: 2, Steps: 8},
		{Workers: 2, Protocol: Before{}, FLOPS: 1e10, Warmup: 1, Steps: 2}, // nearly all compute
		{Workers: 2, Protocol: short, FLOPS: 1e10, Warmup: 1, Steps: 2},
		{Workers: 4, Protocol: Before{}, Duration: 20 * time.Second, Fault: Fault{Every: 10 * time.Second, Mode: Crash, Rejoin: -1}},
		{Workers: 4, Protocol: short, Duration: 20 * time.Second, Fault: Fault{Every: 10 * time.Second, Mode: Crash, Rejoin: -1}},
	} {
		r := mustRun(t, p)
		if !(r.Busy > 0 && r.Busy <= 1 && r.BusyMin > 0 && r.BusyMin <= r.Busy) {
			t.Errorf("%d workers at %g FLOP/s, %s: busy %v (least %v), want in (0, 1]", p.Workers, p.FLOPS, r.Protocol, r.Busy, r.BusyMin)
		}
		// busy is the compute's share of the step
		if p.Fault.Every == 0 {
			if want := float64(r.Compute) / float64(r.Step); math.Abs(r.Busy-want) > 0.02 {
				t.Errorf("%d workers, %s: busy %.3f, compute/step %.3f", p.Workers, r.Protocol, r.Busy, want)
			}
		}
	}
	for _, proto := range []Protocol{Before{}, short} {
		r := mustRun(t, Params{Workers: 2, Protocol: proto, FLOPS: 1e10, Warmup: 1, Steps: 2})
		if r.Busy < 0.95 {
			t.Errorf("%s: a compute-bound cluster is %.3f busy", proto.Name(), r.Busy)
		}
	}
}

func TestMoreBandwidthNeverSlower(t *testing.T) {
	for _, n := range []int{2, 8, 64} {
		for _, tf := range []float64{20, 60} {
			for _, proto := range []Protocol{Before{}, short, Pipelined{}} {
				var last *Result
				for _, g := range []float64{1, 10, 25, 100, 400} {
					p := small(n, proto)
					p.FLOPS = tf * 1e12
					p.Link = Defaults().Link
					p.Link.Bandwidth = g * Gbit
					r := mustRun(t, p)
					if last != nil && r.ImagesPerSec < last.ImagesPerSec*(1-1e-9) {
						t.Errorf("N=%d %g TFLOP/s %s: %g Gbit/s gives %.1f images/s, less bandwidth %.1f", n, tf, proto.Name(), g, r.ImagesPerSec, last.ImagesPerSec)
					}
					last = r
				}
			}
		}
	}
	// and a faster GPU, a faster commit or snapshot load, cheaper hops or
	// the pipelined protocol never slow it
	for _, proto := range []Protocol{Before{}, short} {
		base := small(8, proto)
		base.Link = Defaults().Link
		want := mustRun(t, base)
		for _, mod := range []func(*Params){
			func(p *Params) { p.FLOPS = 60e12 },
			func(p *Params) { p.Commit = time.Millisecond },
			func(p *Params) { p.SnapshotLoad = time.Millisecond },
			func(p *Params) { p.Protocol = Pipelined{} },
			func(p *Params) { p.Link.Latency = time.Microsecond },
		} {
			p := base
			mod(&p)
			if r := mustRun(t, p); r.ImagesPerSec < want.ImagesPerSec {
				t.Errorf("%+v: %.1f images/s, slower than %s's %.1f", p, r.ImagesPerSec, proto.Name(), want.ImagesPerSec)
			}
		}
	}
}

func TestStepIsItsParts(t *testing.T) {
	// the step before was serial: prep, compute, exposed ring, apply, then
	// the coordinator's path (upload, commit, the next task)
	p := small(8, Before{})
	if err := p.fill(); err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, p)
	if want := p.ComputeTime(p.Batch); absDur(r.Compute-want) > time.Microsecond {
		t.Errorf("compute %v, want %v", r.Compute, want)
	}
	coord := r.Upload + p.Commit
	if r.Wait < coord || r.Wait > coord+5*time.Millisecond || r.Snapshot != 0 {
		t.Errorf("before: wait %v, want the upload and commit %v and a little; snapshot work %v", r.Wait, coord, r.Snapshot)
	}
	// the pipelined protocol takes the coordinator off the workers' path:
	// no wait, a snapshot's work spread over its period
	q := small(8, Pipelined{InFlight: 2, Every: 10})
	q.Steps = 20
	r = mustRun(t, q)
	if r.Wait > time.Millisecond {
		t.Errorf("pipelined: wait %v", r.Wait)
	}
	if err := q.fill(); err != nil {
		t.Fatal(err)
	}
	n := time.Duration(q.Workers)
	work := (q.Protocol.SnapshotWork(&q, q.Net, true) + (n-1)*q.Protocol.SnapshotWork(&q, q.Net, false)) / n / 10
	if absDur(r.Snapshot-work) > time.Microsecond {
		t.Errorf("pipelined: snapshot work %v a step, want %v", r.Snapshot, work)
	}
	// but with a coordinator slower than a period's steps, each period waits
	// for its snapshot's upload and load: at least one load a period, at
	// most that and a period of steps
	q.FLOPS, q.SnapshotLoad = 1e15, 2*time.Second
	r = mustRun(t, q)
	free := mustRun(t, Params{Workers: q.Workers, Protocol: q.Protocol, FLOPS: q.FLOPS, Warmup: q.Warmup, Steps: q.Steps})
	period := 10 * r.Step
	if period < q.SnapshotLoad+r.Upload || period > q.SnapshotLoad+r.Upload+10*free.Step+10*time.Millisecond {
		t.Errorf("snapshot-bound: a period of 10 steps takes %v; load %v, upload %v, free steps %v", period, q.SnapshotLoad, r.Upload, free.Step)
	}
}

// TestBeforeIsTheOldProtocol: the before protocol on the new core gives
// what the simulator gave the protocol built then (docs/sim.md's tables
// until this change: 8,712 images/s at N = 64, 10 Gbit/s, 20 TFLOP/s;
// 1,898 at N = 8).
func TestBeforeIsTheOldProtocol(t *testing.T) {
	for n, want := range map[int]float64{8: 1898, 64: 8712} {
		r := mustRun(t, Params{Workers: n, Protocol: Before{}, Warmup: 5, Steps: 20})
		if math.Abs(r.ImagesPerSec/want-1) > 0.005 {
			t.Errorf("N=%d: %.0f images/s, the old protocol's %.0f", n, r.ImagesPerSec, want)
		}
	}
}

func absDur(d time.Duration) time.Duration { return max(d, -d) }

func TestFaultReformsAsControlDoes(t *testing.T) {
	for _, proto := range []Protocol{Before{}, short, Pipelined{}} {
		for _, mode := range []FaultMode{Kill, Crash} {
			p := Params{Workers: 6, Protocol: proto, Duration: 40 * time.Second, Fault: Fault{Every: 40 * time.Second, First: 10 * time.Second, Mode: mode, Rejoin: 8 * time.Second}, Trace: true}
			r := mustRun(t, p)
			name := proto.Name() + " " + mode.String()
			if r.Deaths != 1 {
				t.Fatalf("%s: %d deaths", name, r.Deaths)
			}
			// a ring without the dead worker, then with its replacement
			if !slices.Equal(r.Rings, []int{5, 6}) {
				t.Errorf("%s: ring set-ups of %v workers, want [5 6]", name, r.Rings)
			}
			var victim string
			for _, a := range r.Actions {
				if i := strings.Index(a, " abandon "); i >= 0 {
					victim = regexp.MustCompile(`worker (w\d+)`).FindStringSubmatch(a)[1]
					break
				}
			}
			if victim == "" {
				t.Fatalf("%s: no step abandoned:\n%s", name, strings.Join(r.Actions, "\n"))
			}
			trace := strings.Join(r.Actions, "\n")
			want := map[FaultMode]string{Kill: "left: connection reset", Crash: "drop " + victim + ": memberlist reports it failed"}[mode]
			if !strings.Contains(trace, want) {
				t.Errorf("%s: the trace does not say %q", name, want)
			}
			if !strings.Contains(trace, "backoff "+victim) {
				t.Errorf("%s: %s not backed off", name, victim)
			}
			commits(t, r, 6*32)
			// what is abandoned: the steps after the last snapshot
			if most := proto.SnapshotEvery() + proto.Window(); r.StepsAbandoned < 1 || r.StepsAbandoned > most {
				t.Errorf("%s: %d steps abandoned, want 1 to %d", name, r.StepsAbandoned, most)
			}
			// the crash is found by memberlist, seconds after the death
			if mode == Crash {
				at := regexp.MustCompile(`(?m)^ *([0-9.]+) drop `).FindStringSubmatch(trace)
				if at == nil {
					t.Fatal("no drop")
				}
				if p.fill() != nil {
					t.Fatal("fill")
				}
				d, _ := strconv.ParseFloat(at[1], 64)
				start := regexp.MustCompile(`(?m)^ *([0-9.]+) committed `).FindStringSubmatch(trace) // near the window's start
				s0, _ := strconv.ParseFloat(start[1], 64)
				if det := p.Detect(7).Seconds(); d < s0+10+det || d > s0+10+det+3 {
					t.Errorf("%s: dropped at %.3f s, the death at ~%.1f s plus detection %.3f s", name, d, s0+10, det)
				}
			}
		}
	}
}

func TestCrashWithoutGossip(t *testing.T) {
	late := regexp.MustCompile(`abandon gen=\d+ step=\d+: \[([^]]*)\] did not report step`)
	for _, c := range []struct {
		proto Protocol
		first time.Duration
		late  string
	}{
		{Before{}, 2 * time.Second, "w000 w001 w002"},
		// with steps in flight the live ones may have reported the oldest
		// step open and be stalled in the next: only the dead one is late
		{short, 2 * time.Second, "w001"},
		{short, 2100 * time.Millisecond, "w000 w001 w002"},
	} {
		proto := c.proto
		// memberlist too slow to matter. With the ring's timeout longer than
		// the step's, the step timeout drops every member that has not
		// reported the oldest step open — the dead one and the live ones
		// stalled in its ring — and the live ones rejoin.
		p := Params{Workers: 3, Protocol: proto, Duration: 40 * time.Second, StepTimeout: 5 * time.Second, RingTimeout: time.Hour, ProbeInterval: time.Hour,
			Fault: Fault{Every: time.Hour, First: c.first, Mode: Crash, Rejoin: -1}, Trace: true}
		r := mustRun(t, p)
		trace := strings.Join(r.Actions, "\n")
		m := late.FindStringSubmatch(trace)
		if m == nil || m[1] != c.late || r.Drops != len(strings.Fields(m[1])) || r.Rings[len(r.Rings)-1] != 2 {
			t.Errorf("%s, death at %v: late %v, %d drops, rings %v; trace:\n%s", proto.Name(), c.first, m, r.Drops, r.Rings, trace)
		}
		commits(t, r, 3*32)
		// With the ring's timeout shorter, the live ones report a ring
		// fault, charged to nobody; the ring re-forms with the dead one,
		// whose set-up times out, and it alone is dropped.
		p.RingTimeout, p.SetupTimeout = 2*time.Second, 3*time.Second
		r = mustRun(t, p)
		trace = strings.Join(r.Actions, "\n")
		if !strings.Contains(trace, "the ring broke") || !strings.Contains(trace, "drop w001: did not load the state") || r.Drops != 1 ||
			!slices.Equal(r.Rings, []int{3, 2}) {
			t.Errorf("%s: %d drops, rings %v; trace:\n%s", proto.Name(), r.Drops, r.Rings, trace)
		}
		commits(t, r, 3*32)
	}
}

func TestFlappingWorkerExcluded(t *testing.T) {
	for _, proto := range []Protocol{Before{}, short} {
		p := Params{Workers: 4, Protocol: proto, MaxFailures: 2, Duration: 30 * time.Second, Fault: Fault{Every: time.Second, Rejoin: 500 * time.Millisecond, Mode: Kill, Same: true}, Trace: true}
		r := mustRun(t, p)
		trace := strings.Join(r.Actions, "\n")
		if r.Excludes != 1 || !strings.Contains(trace, "exclude w001: excluded after 2 failures in a row") {
			t.Fatalf("%s: %d exclusions:\n%s", proto.Name(), r.Excludes, trace)
		}
		if r.Rings[len(r.Rings)-1] != 3 {
			t.Errorf("%s: rings %v, want the last without w001", proto.Name(), r.Rings)
		}
		commits(t, r, 4*32)
	}
}

func TestFaultsLossPerDeath(t *testing.T) {
	// the cost of a death does not depend on the window that holds it
	base := Params{Workers: 8, Steps: 20, Fault: Fault{Every: 10 * time.Minute, Rejoin: 5 * time.Second}}
	var last []FaultRow
	for _, d := range []time.Duration{40 * time.Second, 70 * time.Second} {
		b := base
		b.Duration = d
		rows, err := Faults(b, []FaultMode{Kill}, []Protocol{Before{}, short}, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rows {
			if len(r.Faulted) != map[int]int{0: 1, 1: 2}[i] || r.LostPerDeath <= 0 || r.LostMin > r.LostPerDeath || r.LostMax < r.LostPerDeath {
				t.Errorf("%s: %d runs, lost %v (%v–%v)", r.Base.Protocol, len(r.Faulted), r.LostPerDeath, r.LostMin, r.LostMax)
			}
			if want := r.LostPerDeath.Seconds() / 600; math.Abs(r.Loss-want) > 1e-9 {
				t.Errorf("loss %g, want %g", r.Loss, want)
			}
			if last != nil && absDur(r.LostPerDeath-last[i].LostPerDeath) > 50*time.Millisecond {
				t.Errorf("%s: %v lost in a window of %v, %v in a shorter one", r.Base.Protocol, r.LostPerDeath, d, last[i].LostPerDeath)
			}
		}
		last = rows
	}
}

func TestRingTime(t *testing.T) {
	l := Link{Bandwidth: 10 * Gbit, Latency: 100 * time.Microsecond, Overhead: 10 * time.Microsecond}
	// a large vector: bandwidth bound, plus the pipeline's fill
	n, size := 1<<24, 8
	bw := 2 * float64(size-1) / float64(size) * 4 * float64(n) / l.Rate()
	got := RingTime(n, size, 256<<10, l).Seconds()
	if got < bw || got > bw*1.1 {
		t.Errorf("64 MiB over 8: %.4f s, bandwidth bound %.4f s", got, bw)
	}
	// a tiny vector: 2(N−1) hops of latency and overhead
	for _, size := range []int{2, 16, 256} {
		hop := l.Latency + l.Overhead
		got := RingTime(size, size, 256<<10, l)
		want := time.Duration(2*(size-1)) * hop
		if got < want || got > want+want/50 {
			t.Errorf("%d floats over %d: %v, want %v", size, size, got, want)
		}
	}
	if RingTime(100, 1, 256<<10, l) != 0 || RingTime(0, 4, 256<<10, l) != 0 {
		t.Error("a world of one or an empty vector takes time")
	}
	// more bandwidth, less time; more ranks, more time
	prev := time.Duration(math.MaxInt64)
	for _, g := range []float64{1, 10, 100} {
		l.Bandwidth = g * Gbit
		d := RingTime(1<<20, 16, 256<<10, l)
		if d > prev {
			t.Errorf("%g Gbit/s slower than less", g)
		}
		prev = d
	}
}

func TestNetwork(t *testing.T) {
	n, err := DefaultNetwork(128)
	if err != nil {
		t.Fatal(err)
	}
	if n.Params != 1950659 || n.MACs <= 4e9 || n.MACs >= 5e9 {
		t.Errorf("params %d, MACs %d: not the default U-Net at 128²", n.Params, n.MACs)
	}
	sum := 0
	last := 0.0
	for _, b := range n.Buckets(1 << 18) {
		sum += b.Floats
		if b.Frac < last || b.Frac > 1 {
			t.Errorf("bucket at %.3f after %.3f", b.Frac, last)
		}
		last = b.Frac
	}
	if sum != n.Params || last != 1 {
		t.Errorf("buckets cover %d of %d floats, the last at %.3f", sum, n.Params, last)
	}
	if bs := n.Buckets(1 << 30); len(bs) != 1 || bs[0].Floats != n.Params {
		t.Errorf("one huge bucket: %+v", bs)
	}
}

// TestReadyOrderIsBackward's: the ready points are the offsets
// model.UNet.BackwardNotify announces, in its order (on an 8×8 image).
func TestReadyOrderIsBackwards(t *testing.T) {
	u, err := model.New(model.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	u.Init(rand.New(rand.NewPCG(1, 2)))
	ar, err := u.NewArena(1, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	x, noise := nn.NewTensor(1, 4, 8, 8), nn.NewTensor(1, 3, 8, 8)
	var got []int
	u.TrainStep(ar, x, []float32{0.5}, noise, 1, func(from int) { got = append(got, from) })
	n, err := NetworkOf(u, 8)
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for _, r := range n.Ready {
		want = append(want, r.From)
	}
	if !slices.Equal(got, want) {
		t.Errorf("BackwardNotify announces %v, the model %v", got, want)
	}
}

func TestCalibration(t *testing.T) {
	runs, err := ReadMeasured("../bench/scale.json")
	if err != nil {
		t.Skip(err)
	}
	rows, err := Calibrate(ThisMachine(), runs)
	if err != nil {
		t.Fatal(err)
	}
	fitted := 0
	for _, r := range rows {
		if r.Fitted {
			fitted++
			if math.Abs(r.StepError) > 1e-3 {
				t.Errorf("%+v: fitted with error %.4f", r.Run, r.StepError)
			}
		}
	}
	if fitted != 2 {
		t.Errorf("%d runs fitted, want one per image size", fitted)
	}
	// a guard against the model drifting from the measurements, not a timing
	if all, _ := CalSummary(rows); all > 0.2 {
		t.Errorf("mean step error %.1f%%", 100*all)
	}
	// the rates of one process (bench/scaling.json): nothing fitted
	rates, err := RatesFromScaling("../bench/scaling.json", "go")
	if err != nil {
		t.Fatal(err)
	}
	m := ThisMachine()
	m.Rates = rates
	if rows, err = Calibrate(m, runs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Fitted {
			t.Errorf("%+v fitted with the rates given", r.Run)
		}
	}
	if all, _ := CalSummary(rows); all > 0.2 {
		t.Errorf("mean step error with bench/scaling.json's rates %.1f%%", 100*all)
	}
}

func TestBadParams(t *testing.T) {
	for _, p := range []Params{{Workers: -1}, {FLOPS: -1}, {Warmup: -1}, {Jitter: -0.5}, {ImageSize: 12}} {
		if _, err := Run(p); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
	if _, err := ParseFaultMode("boom"); err == nil {
		t.Error("fault mode boom accepted")
	}
	if _, err := LinkRate("fast"); err == nil {
		t.Error("link fast accepted")
	}
	if r, err := LinkRate("10gbit"); err != nil || r != 10*Gbit {
		t.Errorf("10gbit: %v %v", r, err)
	}
}
