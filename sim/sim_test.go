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

func TestDeterministic(t *testing.T) {
	for _, p := range []Params{
		small(4, Today{}),
		small(6, IdealPipelined{}),
		{Workers: 5, Jitter: 0.2, Seed: 7, Duration: 20 * time.Second, Fault: Fault{Every: 8 * time.Second, Mode: Crash, Rejoin: 3 * time.Second}},
		{Workers: 5, Protocol: IdealPipelined{}, Duration: 20 * time.Second, Fault: Fault{Every: 5 * time.Second, Mode: Kill, Rejoin: time.Second}},
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
	p := Params{Workers: 5, Jitter: 0.2, Seed: 7, Warmup: 2, Steps: 5}
	q := p
	q.Seed = 8
	if mustRun(t, p).Digest == mustRun(t, q).Digest {
		t.Error("the jitter's seed changes nothing")
	}
}

var commitRE = regexp.MustCompile(`^ *[0-9.]+ commit gen=(\d+) step=(\d+) workers=\[([^]]*)\] loss=\S+ count=(\d+)$`)

// commits checks a trace's commits: every step once, in order, all of its
// batch, by the ring of its generation; it returns how many.
func commits(t *testing.T, r *Result, batch int) int {
	t.Helper()
	next := int64(-1)
	n := 0
	rings := map[string]string{}
	setupRE := regexp.MustCompile(`^ *[0-9.]+ setup gen=(\d+) ring=\[([^]]*)\]`)
	for _, a := range r.Actions {
		if m := setupRE.FindStringSubmatch(a); m != nil {
			rings[m[1]] = m[2]
			continue
		}
		m := commitRE.FindStringSubmatch(a)
		if m == nil {
			continue
		}
		step, _ := strconv.ParseInt(m[2], 10, 64)
		if next >= 0 && step != next {
			t.Fatalf("commit of step %d after step %d: %s", step, next-1, a)
		}
		next = step + 1
		if c, _ := strconv.Atoi(m[4]); c != batch {
			t.Fatalf("step %d committed %d images of %d", step, c, batch)
		}
		if rings[m[1]] != m[3] {
			t.Fatalf("step %d committed by [%s], generation %s's ring is [%s]", step, m[3], m[1], rings[m[1]])
		}
		n++
	}
	if n == 0 {
		t.Fatal("nothing committed")
	}
	return n
}

func TestEveryStepCommittedOnce(t *testing.T) {
	for _, p := range []Params{
		small(3, Today{}),
		small(5, IdealPipelined{}),
		{Workers: 6, Duration: 30 * time.Second, Fault: Fault{Every: 7 * time.Second, Mode: Kill, Rejoin: 2 * time.Second}},
		{Workers: 6, Protocol: IdealPipelined{}, Duration: 40 * time.Second, Fault: Fault{Every: 15 * time.Second, Mode: Crash, Rejoin: 4 * time.Second}},
	} {
		p.Trace = true
		r := mustRun(t, p) // Run itself fails on a commit out of order or of a partial batch
		commits(t, r, p.Workers*32)
		if p.Fault.Every > 0 && r.Abandons == 0 {
			t.Errorf("%+v: a worker died in a step and nothing was abandoned", p.Fault)
		}
		if int64(r.Commits) < r.Steps || r.Steps == 0 {
			t.Errorf("%d commits and %d steps in the window", r.Commits, r.Steps)
		}
	}
}

func TestBusyFraction(t *testing.T) {
	for _, p := range []Params{
		small(1, Today{}), small(4, Today{}), small(16, IdealPipelined{}),
		{Workers: 2, FLOPS: 1e15, Warmup: 2, Steps: 5}, // nearly all communication
		{Workers: 2, FLOPS: 1e10, Warmup: 1, Steps: 2}, // nearly all compute
		{Workers: 4, Duration: 20 * time.Second, Fault: Fault{Every: 10 * time.Second, Mode: Crash, Rejoin: -1}},
	} {
		r := mustRun(t, p)
		if !(r.Busy > 0 && r.Busy <= 1 && r.BusyMin > 0 && r.BusyMin <= r.Busy) {
			t.Errorf("%d workers at %g FLOP/s: busy %v (least %v), want in (0, 1]", p.Workers, p.FLOPS, r.Busy, r.BusyMin)
		}
		// busy is the compute's share of the step
		if p.Fault.Every == 0 {
			if want := float64(r.Compute) / float64(r.Step); math.Abs(r.Busy-want) > 0.02 {
				t.Errorf("%d workers: busy %.3f, compute/step %.3f", p.Workers, r.Busy, want)
			}
		}
	}
	r := mustRun(t, Params{Workers: 2, FLOPS: 1e10, Warmup: 1, Steps: 2})
	if r.Busy < 0.95 {
		t.Errorf("a compute-bound cluster is %.3f busy", r.Busy)
	}
}

func TestMoreBandwidthNeverSlower(t *testing.T) {
	for _, n := range []int{2, 8, 64} {
		for _, tf := range []float64{20, 60} {
			for _, proto := range []Protocol{Today{}, IdealPipelined{}} {
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
	// and a faster GPU, a faster commit and the pipelined model never slow it
	base := mustRun(t, small(8, Today{}))
	for _, mod := range []func(*Params){
		func(p *Params) { p.FLOPS = 60e12 },
		func(p *Params) { p.Commit = time.Millisecond },
		func(p *Params) { p.Protocol = IdealPipelined{} },
		func(p *Params) { p.Link.Latency = time.Microsecond },
	} {
		p := small(8, Today{})
		p.Link = Defaults().Link
		mod(&p)
		if r := mustRun(t, p); r.ImagesPerSec < base.ImagesPerSec {
			t.Errorf("%+v: %.1f images/s, slower than the default %.1f", p, r.ImagesPerSec, base.ImagesPerSec)
		}
	}
}

func TestStepIsItsParts(t *testing.T) {
	// today's step is serial: prep, compute, exposed ring, apply, then the
	// coordinator's path (upload, commit, the next task)
	p := small(8, Today{})
	if err := p.fill(); err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, p)
	if want := p.ComputeTime(p.Batch); absDur(r.Compute-want) > time.Microsecond {
		t.Errorf("compute %v, want %v", r.Compute, want)
	}
	coord := r.Upload + p.Commit
	if r.Wait < coord || r.Wait > coord+5*time.Millisecond {
		t.Errorf("today's wait %v, want the upload and commit %v and a little", r.Wait, coord)
	}
	// the pipelined model hides the coordinator when the workers are slower
	q := p
	q.Protocol, q.FLOPS = IdealPipelined{}, 5e12
	if r := mustRun(t, q); r.Wait > time.Millisecond {
		t.Errorf("ideal-pipelined, compute-bound: wait %v", r.Wait)
	}
	// and is bound by the commit when they are faster
	q.FLOPS = 1e15
	q.Commit = 200 * time.Millisecond
	if r := mustRun(t, q); r.Step < q.Commit || r.Step > q.Commit+5*time.Millisecond {
		t.Errorf("ideal-pipelined, commit-bound: step %v, commit %v", r.Step, q.Commit)
	}
}

func absDur(d time.Duration) time.Duration { return max(d, -d) }

func TestFaultReformsAsControlDoes(t *testing.T) {
	for _, mode := range []FaultMode{Kill, Crash} {
		p := Params{Workers: 6, Duration: 40 * time.Second, Fault: Fault{Every: 40 * time.Second, First: 10 * time.Second, Mode: mode, Rejoin: 8 * time.Second}, Trace: true}
		r := mustRun(t, p)
		if r.Deaths != 1 {
			t.Fatalf("%s: %d deaths", mode, r.Deaths)
		}
		// a ring without the dead worker, then with its replacement
		if !slices.Equal(r.Rings, []int{5, 6}) {
			t.Errorf("%s: ring set-ups of %v workers, want [5 6]", mode, r.Rings)
		}
		var victim string
		for _, a := range r.Actions {
			if i := strings.Index(a, " abandon "); i >= 0 {
				victim = regexp.MustCompile(`worker (w\d+)`).FindStringSubmatch(a)[1]
				break
			}
		}
		if victim == "" {
			t.Fatalf("%s: no step abandoned:\n%s", mode, strings.Join(r.Actions, "\n"))
		}
		trace := strings.Join(r.Actions, "\n")
		want := map[FaultMode]string{Kill: "left: connection reset", Crash: "drop " + victim + ": memberlist reports it failed"}[mode]
		if !strings.Contains(trace, want) {
			t.Errorf("%s: the trace does not say %q", mode, want)
		}
		if !strings.Contains(trace, "backoff "+victim) {
			t.Errorf("%s: %s not backed off", mode, victim)
		}
		commits(t, r, 6*32)
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
			if det := p.Detect(7).Seconds(); d < 10+det || d > 10+det+1 {
				t.Errorf("dropped at %.3f s, the death at ~10 s plus detection %.3f s", d, det)
			}
		}
	}
}

func TestCrashWithoutGossip(t *testing.T) {
	// memberlist too slow to matter. With the ring's timeout longer than
	// the step's, the step timeout drops every member that has not
	// reported — the dead one and the live ones stalled in its ring — and
	// the live ones rejoin.
	p := Params{Workers: 3, Duration: 40 * time.Second, StepTimeout: 5 * time.Second, RingTimeout: time.Hour, ProbeInterval: time.Hour,
		Fault: Fault{Every: time.Hour, First: 2 * time.Second, Mode: Crash, Rejoin: -1}, Trace: true}
	r := mustRun(t, p)
	trace := strings.Join(r.Actions, "\n")
	if !strings.Contains(trace, "[w000 w001 w002] did not report step") || r.Drops != 3 || r.Rings[len(r.Rings)-1] != 2 {
		t.Errorf("%d drops, rings %v; trace:\n%s", r.Drops, r.Rings, trace)
	}
	// With the ring's timeout shorter, the live ones report a ring fault,
	// charged to nobody; the ring re-forms with the dead one, whose set-up
	// times out, and it alone is dropped.
	p.RingTimeout, p.SetupTimeout = 2*time.Second, 3*time.Second
	r = mustRun(t, p)
	trace = strings.Join(r.Actions, "\n")
	if !strings.Contains(trace, "the ring broke") || !strings.Contains(trace, "drop w001: did not load the state") || r.Drops != 1 ||
		!slices.Equal(r.Rings, []int{3, 2}) {
		t.Errorf("%d drops, rings %v; trace:\n%s", r.Drops, r.Rings, trace)
	}
	commits(t, r, 3*32)
}

func TestFlappingWorkerExcluded(t *testing.T) {
	p := Params{Workers: 4, MaxFailures: 2, Duration: 30 * time.Second, Fault: Fault{Every: time.Second, Rejoin: 500 * time.Millisecond, Mode: Kill, Same: true}, Trace: true}
	r := mustRun(t, p)
	trace := strings.Join(r.Actions, "\n")
	if r.Excludes != 1 || !strings.Contains(trace, "exclude w001: excluded after 2 failures in a row") {
		t.Fatalf("%d exclusions:\n%s", r.Excludes, trace)
	}
	if !strings.Contains(trace, "refuse w001") && r.Rings[len(r.Rings)-1] != 3 {
		t.Errorf("after its exclusion w001 is back: rings %v", r.Rings)
	}
	if r.Rings[len(r.Rings)-1] != 3 {
		t.Errorf("rings %v, want the last without w001", r.Rings)
	}
	commits(t, r, 4*32)
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
