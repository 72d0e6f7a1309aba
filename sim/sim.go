// Package sim simulates a training cluster in simulated time: the real
// control core (package control) decides everything a coordinator
// decides, fed with the events a cluster of modelled workers, links and
// a modelled coordinator would produce, in a discrete-event loop (a
// priority queue of timed events). Compute comes from the network's FLOP
// count and a FLOP rate; the ring all-reduce from link bandwidth, latency,
// per-message overhead and chunking as package allreduce runs it,
// overlapped with backward bucket by bucket as the worker does; rank 0's
// uploads and the coordinator's commits from measured or given times;
// faults from a kill or crash schedule, detected as the coordinator detects
// them.
//
// Two protocols drive the same core (Protocol): Pipelined, the built one
// (steps in flight, a snapshot every SnapshotEvery steps), and Before, the
// protocol built until it, reproduced by the core's Window = 1,
// SnapshotEvery = 1 cadence with the old costs. docs/sim.md has the model,
// its parameters, its calibration against real runs and its results.
package sim

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tinct/tinct/control"
)

// Result is what a run measured over its window.
type Result struct {
	Protocol string
	Workers  int

	Window       time.Duration // simulated time measured, from a commit to a commit
	Steps        int64         // steps committed in the window
	Images       int64
	ImagesPerSec float64
	// Busy is the GPUs' mean busy fraction over the window (forward and
	// backward, wasted work included); BusyMin the least busy GPU's.
	Busy, BusyMin float64

	// Mean per committed step of the window (the mean over its ranks).
	Step        time.Duration // Window / Steps
	Prep        time.Duration // host work before forward
	Compute     time.Duration // forward and backward on the GPU
	RingExposed time.Duration // the all-reduce after backward (gradient tail and BN buffers)
	Apply       time.Duration
	Snapshot    time.Duration // the workers' snapshot work (state checksum, rank 0's copy), per step
	Wait        time.Duration // the rest: waiting for a task (the coordinator's path: upload, commit, the next task) or for the ring
	Upload      time.Duration // rank 0's upload at a snapshot (the update, Before; the state, Pipelined): a parameter's consequence

	// Counts over the window (Deaths over the run).
	Deaths, Setups, Abandons, Drops, Backoffs, Excludes int
	Commits                                             int   // Commit actions (snapshots loaded)
	StepsAbandoned                                      int   // steps whose tasks were sent and that an Abandon gave up
	Rings                                               []int // each Setup's ring size, in order

	Digest  uint64   // of every action of the core with its time: equal runs, equal digests
	Actions []string // with Params.Trace: "time action"
}

// Run simulates p and returns what it measured. An error is a bad
// parameter or a broken invariant of the core's commits.
func Run(p Params) (*Result, error) {
	if err := p.fill(); err != nil {
		return nil, err
	}
	s, err := newSim(p)
	if err != nil {
		return nil, err
	}
	if err := s.run(); err != nil {
		return nil, err
	}
	return s.result(), nil
}

type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type queue []event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type interval struct{ from, to time.Duration }

// worker is one simulated worker process (by name; a replacement takes
// the name of the one it replaces, and its GPU slot).
type worker struct {
	name      string
	idx       int
	alive     bool
	excluded  bool
	session   uint64
	tok       uint64 // bumped by a set-up, a death or a dropped session: older events are void
	gen       uint64
	rank      int
	size      int
	started   int64 // newest step started in gen
	applied   int64 // newest step applied (and its snapshot work done) in gen
	connected bool
	halted    bool                    // its ring broke: nothing more in this generation
	tasks     map[int64]*control.Task // gen's tasks received and not yet started (the worker's queue)
	busyUntil time.Duration           // end of the newest compute
	egress    time.Duration           // its link is busy until then
	inbox     time.Duration           // the newest message from the coordinator arrives then (one stream: in order)
	loaded    time.Duration           // its newest set-up is loaded then (set-ups are handled one at a time)

	closed  time.Duration // busy time of finished intervals
	pending []interval
}

// deliverAt is when a message from the coordinator that would arrive at t
// does: after the ones sent before it on the same stream.
func (w *worker) deliverAt(t time.Duration) time.Duration {
	w.inbox = max(w.inbox, t)
	return w.inbox
}

func (w *worker) addBusy(from, to time.Duration) {
	if to > from {
		w.pending = append(w.pending, interval{from, to})
	}
}

// busyAt is the busy time up to t.
func (w *worker) busyAt(t time.Duration) time.Duration {
	b := w.closed
	keep := w.pending[:0]
	for _, iv := range w.pending {
		switch {
		case iv.to <= t:
			w.closed += iv.to - iv.from
			b += iv.to - iv.from
		case iv.from < t:
			b += t - iv.from
			keep = append(keep, iv)
		default:
			keep = append(keep, iv)
		}
	}
	w.pending = keep
	return b
}

// truncate ends the busy intervals at t (the worker died).
func (w *worker) truncate(t time.Duration) {
	keep := w.pending[:0]
	for _, iv := range w.pending {
		if iv.from < t {
			keep = append(keep, interval{iv.from, min(iv.to, t)})
		}
	}
	w.pending = keep
}

type runKey struct {
	gen  uint64
	step int64
}

// stepRun is one step of one ring generation on the workers' side.
type stepRun struct {
	members   []*memberRun
	started   int
	scheduled bool
	reduceEnd time.Duration
	broken    bool
	brokenAt  time.Duration
}

type memberRun struct {
	w                           *worker
	task                        *control.Task
	start, prepEnd, fwd, bwdEnd time.Duration
	snap                        time.Duration // snapshot work after Apply
	tok                         uint64
}

type sim struct {
	p       Params
	core    *control.Core
	t0      time.Time
	now     time.Duration
	q       queue
	seq     uint64
	ticks   map[time.Duration]bool
	buckets []Bucket
	ringT   map[[2]int]time.Duration

	ws     []*worker
	byName map[string]*worker
	nextID uint64

	coordFree time.Duration
	gen       uint64
	ring      []*worker
	lastTask  int64 // newest step whose tasks were sent in gen
	runs      map[runKey]*stepRun
	broken    map[uint64]time.Duration // generations whose ring broke, and when

	batch      int   // the core's batch
	nextCommit int64 // the step the next Committed must be
	committing *control.Commit
	commitTo   int64           // the newest step of a Commit answered (−1: none)
	later      []control.Event // events that arrived while a Commit was being applied
	coalesce   bool            // the start: the core hears every join at once
	startSetup *control.Setup  // and only its last set-up is sent
	done       bool            // the core finished
	halt       bool            // the window is over
	err        error

	// measurement
	measuring bool
	stopAt    time.Duration // 0: by steps
	tA, tB    time.Duration
	busyA     []time.Duration
	busyB     []time.Duration
	steps     int64
	sumPrep   time.Duration
	sumComp   time.Duration
	sumExp    time.Duration
	sumSnap   time.Duration
	deathN    int

	res    Result
	digest uint64
}

func newSim(p Params) (*sim, error) {
	s := &sim{p: p, t0: time.Unix(1e9, 0).UTC(), ticks: map[time.Duration]bool{}, ringT: map[[2]int]time.Duration{},
		byName: map[string]*worker{}, runs: map[runKey]*stepRun{}, broken: map[uint64]time.Duration{}, commitTo: -1}
	s.buckets = p.Net.Buckets(p.MinBucket)
	s.batch = p.Workers * p.Batch
	// EpochSteps steps an epoch, and an epoch count that does not end the run
	core, err := control.New(control.Config{Examples: p.EpochSteps * s.batch, BatchSize: s.batch, Epochs: math.MaxInt32, Seed: p.Seed | 1,
		Window: p.Protocol.Window(), SnapshotEvery: p.Protocol.SnapshotEvery(),
		MinWorkers: 1, Wait: time.Hour, StepTimeout: p.StepTimeout, SetupTimeout: p.SetupTimeout, Backoff: p.Backoff, MaxFailures: p.MaxFailures},
		control.Position{}, false)
	if err != nil {
		return nil, err
	}
	s.core = core
	s.res = Result{Protocol: p.Protocol.Name(), Workers: p.Workers, Upload: p.UploadTime()}
	h := fnv.New64a()
	s.digest = binary.LittleEndian.Uint64(h.Sum(nil))
	for i := range p.Workers {
		w := &worker{name: fmt.Sprintf("w%03d", i), idx: i}
		s.ws = append(s.ws, w)
		s.byName[w.name] = w
	}
	return s, nil
}

func (s *sim) at(t time.Duration, fn func()) {
	if t < s.now {
		t = s.now
	}
	s.seq++
	heap.Push(&s.q, event{at: t, seq: s.seq, fn: fn})
}

func (s *sim) run() error {
	// Every worker joins at once, and the core hears the joins in one
	// instant: it re-forms at each (nothing is computed yet), and only the
	// last set-up is sent — a real start-up sends them all, and the
	// workers load each in turn, which the window never sees.
	s.coalesce = true
	var sess []uint64
	for _, w := range s.ws {
		s.nextID++
		w.alive, w.session = true, s.nextID
		sess = append(sess, w.session)
	}
	s.now = s.p.CoordLink.Latency
	for i, w := range s.ws {
		s.deliver(control.Join{Worker: w.name, Session: sess[i]})
	}
	s.coalesce = false
	if a := s.startSetup; a != nil {
		s.startSetup = nil
		s.setup(*a)
	}
	s.deliver(control.Tick{})
	for s.q.Len() > 0 && !s.done && !s.halt && s.err == nil {
		e := heap.Pop(&s.q).(event)
		if s.stopAt > 0 && e.at > s.stopAt+s.p.Duration {
			// no commit for a whole Duration after the window's end: it ends there
			s.finishWindow(s.stopAt + s.p.Duration)
			break
		}
		s.now = e.at
		e.fn()
	}
	if s.err != nil {
		return s.err
	}
	if !s.measuring && s.tB == 0 {
		return fmt.Errorf("sim: the run ended at %v before its window (committed %d steps)", s.now, s.core.Position().Step)
	}
	if s.measuring && !s.done {
		return fmt.Errorf("sim: nothing left to happen at %v, before the window's end (step %d)", s.now, s.core.Position().Step)
	}
	if s.measuring {
		s.finishWindow(s.now)
	}
	// the core stops cleanly (a Commit being applied is answered first),
	// and its position is every step committed (what the stop abandons is
	// not the window's)
	counts := s.res
	s.later = nil
	if s.committing != nil {
		s.applied(s.committing)
	}
	s.deliver(control.Stop{Reason: "simulation over"})
	s.res.Abandons, s.res.Setups, s.res.Drops, s.res.Commits, s.res.StepsAbandoned = counts.Abandons, counts.Setups, counts.Drops, counts.Commits, counts.StepsAbandoned
	if got := s.core.Position().Step; got != s.nextCommit || s.commitTo+1 != got {
		return fmt.Errorf("sim: the core's position is step %d, the simulation saw %d steps committed and commits up to step %d", got, s.nextCommit, s.commitTo)
	}
	return s.err
}

// ---- the coordinator's side --------------------------------------------

// recv is a message arriving at the coordinator: it is handled in arrival
// order, each costing CoordMsg of the coordinator's serial time.
func (s *sim) recv(ev control.Event) {
	t := max(s.now, s.coordFree) + s.p.CoordMsg
	s.coordFree = t
	s.at(t, func() { s.deliver(ev) })
}

// deliver hands the core one event now and carries out its actions. While
// a Commit is being applied the core must hear Applied first: what arrives
// meanwhile waits, in order, until it is answered (as the coordinator's
// queue does).
func (s *sim) deliver(ev control.Event) {
	if s.done {
		return
	}
	if _, ok := ev.(control.Applied); !ok && s.committing != nil {
		if _, ok := ev.(control.Stop); !ok {
			s.later = append(s.later, ev)
			return
		}
	}
	acts := slices.Clone(s.core.Handle(s.t0.Add(s.now), ev))
	var tasks []*control.Task
	for _, a := range acts {
		s.record(a)
		switch a := a.(type) {
		case control.Setup:
			s.setup(a)
		case *control.Task:
			tasks = append(tasks, a)
		case *control.Commit:
			s.commit(a)
		case control.Committed:
			s.committed(a)
		case control.Abandon:
			s.res.Abandons++
			if a.Gen == s.gen && a.Step <= s.lastTask {
				s.res.StepsAbandoned += int(s.lastTask - a.Step + 1)
				s.lastTask = a.Step - 1
			}
		case control.Drop:
			s.res.Drops++
			s.dropped(a.Worker, a.Session)
		case control.Backoff:
			s.res.Backoffs++
		case control.Exclude:
			s.res.Excludes++
			if w := s.byName[a.Worker]; w != nil {
				w.excluded = true
				s.dropped(a.Worker, a.Session)
			}
		case control.Refuse:
			if w := s.byName[a.Worker]; w != nil {
				w.excluded = true
			}
		case control.Finish:
			if a.Err != nil && s.err == nil && !s.done {
				s.err = fmt.Errorf("sim: training stopped at %v: %w", s.now, a.Err)
			}
			s.done = true
		}
	}
	if len(tasks) > 0 {
		s.dispatch(tasks)
	}
	// the deadline changes only with an action or a membership event (the
	// core's Deadline walks every member: once per report would be O(N²))
	switch ev.(type) {
	case *control.Report, control.Ready, control.Applied:
		if len(acts) == 0 {
			return
		}
	}
	if d := s.core.Deadline(); !d.IsZero() {
		t := max(d.Sub(s.t0), s.now)
		if !s.ticks[t] {
			s.ticks[t] = true
			s.at(t, func() { delete(s.ticks, t); s.deliver(control.Tick{}) })
		}
	}
}

func (s *sim) record(a control.Action) {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], s.digest^uint64(s.now))
	h.Write(b[:])
	switch a := a.(type) {
	case *control.Task:
		fmt.Fprintf(h, "task %s %d %d %d %d", a.Worker, a.Gen, a.Step, a.Rank, len(a.Indices))
	default:
		h.Write([]byte(traceOf(a)))
	}
	s.digest = binary.LittleEndian.Uint64(h.Sum(nil))
	if s.p.Trace {
		s.res.Actions = append(s.res.Actions, fmt.Sprintf("%10.6f %s", s.now.Seconds(), traceOf(a)))
	}
}

// traceOf is an action as the trace writes it: its String, and for a
// Committed also its generation and ring, which the tests check.
func traceOf(a control.Action) string {
	if c, ok := a.(control.Committed); ok {
		return fmt.Sprintf("committed gen=%d step=%d workers=[%s] count=%d of=%d", c.Gen, c.Step, strings.Join(c.Workers, " "), c.Count, c.Of)
	}
	return a.String()
}

func (s *sim) setup(a control.Setup) {
	if s.coalesce {
		s.startSetup = &a
		return
	}
	s.res.Setups++
	s.res.Rings = append(s.res.Rings, len(a.Ring))
	s.gen, s.lastTask = a.Gen, a.Step-1
	s.ring = s.ring[:0]
	for _, n := range a.Ring {
		s.ring = append(s.ring, s.byName[n])
	}
	for k := range s.runs {
		if k.gen < a.Gen {
			delete(s.runs, k)
		}
	}
	// the state goes to every member at once over the coordinator's link
	b := s.p.Protocol.SetupBytes(s.p.Net)
	l := s.p.CoordLink
	arrive := s.now + l.Overhead + l.Latency + seconds(max(float64(len(a.Ring))*b/l.Bandwidth, b/l.Rate()))
	for rank, w := range s.ring {
		sess := w.session
		s.at(w.deliverAt(arrive), func() { s.workerSetup(w, sess, a.Gen, rank, len(a.Ring), a.Step) })
	}
}

// dispatch sends tasks (of one step or several), one after another from
// the coordinator's loop.
func (s *sim) dispatch(tasks []*control.Task) {
	t := max(s.now, s.coordFree)
	l := s.p.Link
	for _, task := range tasks {
		s.lastTask = max(s.lastTask, task.Step)
		t += s.p.CoordMsg
		w := s.byName[task.Worker]
		sess := w.session
		s.at(w.deliverAt(t+l.Overhead+l.Latency), func() { s.taskArrive(w, sess, task) })
	}
	s.coordFree = t
}

// snapState is what the simulated rank 0 puts in Report.State: which
// replica it is.
type snapState struct {
	gen  uint64
	step int64
}

// commit: the core asks the coordinator to load rank 0's state after
// a.Step (the snapshot, already received with rank 0's report). It does,
// on its serial timeline, and answers Applied.
func (s *sim) commit(a *control.Commit) {
	s.res.Commits++
	switch {
	case s.committing != nil:
		s.err = fmt.Errorf("sim: commit of steps %d..%d while the commit of step %d is applied", a.From, a.Step, s.committing.Step)
	case a.From != s.nextCommit || a.Step < a.From:
		s.err = fmt.Errorf("sim: commit of steps %d..%d, expected from step %d (a step committed twice or skipped)", a.From, a.Step, s.nextCommit)
	case a.Gen != s.gen || len(a.Workers) != len(s.ring):
		s.err = fmt.Errorf("sim: steps %d..%d committed by %v, the ring of generation %d is %d workers", a.From, a.Step, a.Workers, s.gen, len(s.ring))
	case a.State != (snapState{a.Gen, a.Step}):
		s.err = fmt.Errorf("sim: the commit of step %d carries %v, not rank 0's state after it", a.Step, a.State)
	}
	s.committing = a
	t := max(s.now, s.coordFree) + s.p.Protocol.CommitTime(&s.p)
	s.coordFree = t
	s.at(t, func() { s.applied(a) })
}

// applied: the coordinator loaded a's snapshot; the core hears Applied
// (and commits the steps up to it), then whatever arrived meanwhile.
func (s *sim) applied(a *control.Commit) {
	if s.committing != a {
		return
	}
	s.committing = nil
	s.deliver(control.Applied{Step: a.Step, Checksum: checksum(a.Step)})
	if s.err == nil && s.nextCommit != a.Step+1 {
		s.err = fmt.Errorf("sim: the commit of steps %d..%d committed up to step %d", a.From, a.Step, s.nextCommit-1)
	}
	s.commitTo = a.Step
	switch {
	case s.measuring && ((s.stopAt == 0 && s.steps >= int64(s.p.Steps)) || (s.stopAt > 0 && s.now >= s.stopAt)):
		s.finishWindow(s.now)
		s.halt = true
	case !s.measuring && s.tB == 0 && s.nextCommit >= int64(s.p.Warmup):
		s.startWindow()
	}
	for len(s.later) > 0 && s.committing == nil && !s.done {
		ev := s.later[0]
		s.later = s.later[1:]
		s.deliver(ev)
	}
}

// committed is a step committed at now, once each and in order: the
// measurement window's bookkeeping.
func (s *sim) committed(a control.Committed) {
	switch {
	case a.Step != s.nextCommit:
		s.err = fmt.Errorf("sim: step %d committed, expected step %d (a step committed twice or skipped)", a.Step, s.nextCommit)
	case a.Count != s.batch:
		s.err = fmt.Errorf("sim: step %d committed %d images of a batch of %d", a.Step, a.Count, s.batch)
	case a.Gen != s.gen || len(a.Workers) != len(s.ring):
		s.err = fmt.Errorf("sim: step %d committed by %v, the ring of generation %d is %d workers", a.Step, a.Workers, s.gen, len(s.ring))
	}
	s.nextCommit++
	k := runKey{a.Gen, a.Step}
	if s.measuring {
		s.steps++
		if r := s.runs[k]; r != nil && r.scheduled {
			var prep, comp, exp, snap time.Duration
			for _, m := range r.members {
				prep += m.prepEnd - m.start
				comp += m.bwdEnd - m.prepEnd
				exp += r.reduceEnd - m.bwdEnd
				snap += m.snap
			}
			n := time.Duration(len(r.members))
			s.sumPrep += prep / n
			s.sumComp += comp / n
			s.sumExp += exp / n
			s.sumSnap += snap / n
		}
	}
	delete(s.runs, k)
}

func (s *sim) startWindow() {
	s.measuring, s.tA = true, s.now
	// the counts are the window's
	s.res.Setups, s.res.Abandons, s.res.Drops, s.res.Backoffs, s.res.Excludes, s.res.Commits, s.res.StepsAbandoned, s.res.Rings = 0, 0, 0, 0, 0, 0, 0, nil
	s.busyA = make([]time.Duration, len(s.ws))
	for i, w := range s.ws {
		s.busyA[i] = w.busyAt(s.now)
	}
	if s.p.Duration > 0 {
		s.stopAt = s.now + s.p.Duration
	}
	if f := s.p.Fault; f.Every > 0 {
		for t := f.First; s.p.Duration == 0 || t < s.p.Duration; t += f.Every {
			s.at(s.now+t, s.death)
			if s.p.Duration == 0 {
				break // a window by steps: one death
			}
		}
	}
}

func (s *sim) finishWindow(t time.Duration) {
	if !s.measuring {
		return
	}
	s.measuring, s.tB = false, t
	s.busyB = make([]time.Duration, len(s.ws))
	for i, w := range s.ws {
		s.busyB[i] = w.busyAt(t)
	}
}

func (s *sim) result() *Result {
	r := &s.res
	r.Digest = s.digest
	r.Window = s.tB - s.tA
	r.Steps = s.steps
	r.Images = s.steps * int64(s.batch)
	if r.Window > 0 {
		r.ImagesPerSec = float64(r.Images) / r.Window.Seconds()
		r.BusyMin = math.Inf(1)
		for i := range s.ws {
			b := float64(s.busyB[i]-s.busyA[i]) / float64(r.Window)
			r.Busy += b / float64(len(s.ws))
			r.BusyMin = math.Min(r.BusyMin, b)
		}
	}
	if s.steps > 0 {
		n := time.Duration(s.steps)
		r.Step = r.Window / n
		r.Prep, r.Compute, r.RingExposed, r.Snapshot = s.sumPrep/n, s.sumComp/n, s.sumExp/n, s.sumSnap/n
		r.Apply = s.p.Apply
		r.Wait = max(0, r.Step-r.Prep-r.Compute-r.RingExposed-r.Apply-r.Snapshot)
	}
	return r
}

func checksum(step int64) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(step)+1)
	return b[:]
}

// ---- membership and faults ------------------------------------------

func (s *sim) join(w *worker) {
	if w.excluded {
		return
	}
	s.nextID++
	w.alive, w.session, w.gen, w.halted = true, s.nextID, 0, false
	w.tok++
	w.busyUntil = max(w.busyUntil, s.now)
	sess := w.session
	s.at(s.now+s.p.CoordLink.Latency, func() { s.recv(control.Join{Worker: w.name, Session: sess}) })
}

// dropped: the coordinator ended w's session; a live worker opens a new one.
func (s *sim) dropped(name string, session uint64) {
	w := s.byName[name]
	if w == nil || w.session != session {
		return
	}
	w.session = 0
	w.tok++
	w.halted = true
	if w.alive && !w.excluded {
		s.at(s.now+s.p.Reconnect, func() {
			if w.alive && w.session == 0 {
				s.join(w)
			}
		})
	}
}

// death kills a worker now: the next victim in the ring, or the same one.
func (s *sim) death() {
	var victim *worker
	if s.p.Fault.Same {
		victim = s.ws[min(1, len(s.ws)-1)]
	} else {
		alive := make([]*worker, 0, len(s.ws))
		for _, w := range s.ws {
			if w.alive {
				alive = append(alive, w)
			}
		}
		if len(alive) > 0 {
			victim = alive[(s.deathN*7+1)%len(alive)]
		}
	}
	s.deathN++
	if victim == nil || !victim.alive {
		return
	}
	s.res.Deaths++
	w := victim
	sess := w.session
	w.alive = false
	w.tok++
	w.truncate(s.now)
	w.busyUntil = s.now
	if slices.Contains(s.ring, w) && w.gen == s.gen {
		s.breakRing(s.gen)
	}
	if sess != 0 {
		if s.p.Fault.Mode == Kill {
			// its session's stream is reset: the coordinator sees it at once
			s.at(s.now+s.p.CoordLink.Latency, func() { s.recv(control.Leave{Worker: w.name, Session: sess, Reason: "connection reset"}) })
		} else {
			s.at(s.now+s.p.Detect(len(s.ws)+1), func() {
				s.recv(control.Suspect{Worker: w.name, Session: sess, Reason: "memberlist reports it failed"})
			})
		}
	}
	if s.p.Fault.Rejoin >= 0 {
		s.at(s.now+s.p.Fault.Rejoin, func() {
			if !w.alive {
				s.join(w)
			}
		})
	}
}

// breakRing: a member of gen died. Every step of gen in flight fails in
// the ring: at once where connections are reset (kill), after the ring
// timeout where they stall (crash) — each member once its own backward
// is done; the members then wait for a new set-up.
func (s *sim) breakRing(gen uint64) {
	if _, ok := s.broken[gen]; ok {
		return
	}
	s.broken[gen] = s.now
	var keys []runKey
	for k := range s.runs {
		if k.gen == gen {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b runKey) int { return int(a.step - b.step) })
	for _, k := range keys {
		r := s.runs[k]
		if r.scheduled && r.reduceEnd <= s.now {
			continue
		}
		r.broken, r.brokenAt = true, s.now
		for _, m := range r.members {
			if m != nil {
				s.ringFault(m, k)
			}
		}
	}
}

// ringFault schedules m's report of a ring failure of step k.
func (s *sim) ringFault(m *memberRun, k runKey) {
	w := m.w
	if !w.alive || w.tok != m.tok {
		return
	}
	w.halted = true
	brokeAt := s.broken[k.gen]
	t := max(m.bwdEnd, brokeAt)
	if s.p.Fault.Mode == Crash {
		t = max(m.fwd, brokeAt) + s.p.RingTimeout
	}
	tok := w.tok
	s.at(t, func() {
		if w.alive && w.tok == tok {
			s.sendReport(w, &control.Report{Worker: w.name, Gen: k.gen, Step: k.step, Err: "ring broken", RingFault: true})
		}
	})
}

// ---- the workers' side -----------------------------------------------

func (s *sim) workerSetup(w *worker, session uint64, gen uint64, rank, size int, step int64) {
	if !w.alive || w.session != session || w.session == 0 {
		return // dead, or a new session: this set-up is for the old one
	}
	// the queued tasks are dropped (worker.taskQueue.flush), the step in
	// progress given up
	w.tok++
	w.gen, w.rank, w.size = gen, rank, size
	w.started, w.applied, w.connected, w.halted = step-1, step-1, false, false
	w.tasks = map[int64]*control.Task{}
	// the compute in progress runs to its end; then the state is loaded,
	// after any set-up before it
	ready := max(s.now, w.busyUntil, w.loaded) + s.p.Load
	w.loaded = ready
	l := s.p.Link
	s.at(ready+l.Overhead+l.Latency, func() {
		if w.alive && w.session == session {
			s.recv(control.Ready{Worker: w.name, Gen: gen, Addr: "addr-" + w.name})
		}
	})
}

func (s *sim) taskArrive(w *worker, session uint64, t *control.Task) {
	if !w.alive || w.session != session {
		return
	}
	if t.Gen != w.gen {
		// as worker.Member.Step answers a task of another generation
		s.sendReport(w, &control.Report{Worker: w.name, Gen: t.Gen, Step: t.Step, Err: fmt.Sprintf("task of generation %d, worker is at %d", t.Gen, w.gen)})
		return
	}
	w.tasks[t.Step] = t
	s.advance(w)
}

// advance starts w's next queued task once it is done with the last: the
// worker runs its tasks back to back, never waiting for the coordinator
// while one is queued.
func (s *sim) advance(w *worker) {
	if !w.alive || w.halted || w.gen == 0 || w.applied < w.started {
		return
	}
	next := w.started + 1
	t := w.tasks[next]
	if t == nil {
		return
	}
	delete(w.tasks, next)
	s.start(w, t)
}

func (s *sim) jitter(w *worker, step int64) float64 {
	if s.p.Jitter == 0 {
		return 1
	}
	r := rand.New(rand.NewPCG(s.p.Seed^uint64(w.idx)*0x9e3779b97f4a7c15, uint64(step)))
	return 1 + s.p.Jitter*r.Float64()
}

func (s *sim) start(w *worker, task *control.Task) {
	step := task.Step
	w.started = step
	t := s.now
	if !w.connected && w.size > 1 {
		t += s.p.RingConnect + 4*s.p.Link.Latency
		w.connected = true
	}
	share := len(task.Indices)
	m := &memberRun{w: w, task: task, start: s.now, tok: w.tok}
	if task.Snapshot {
		m.snap = s.p.Protocol.SnapshotWork(&s.p, s.p.Net, task.SendState)
	}
	m.prepEnd = t + time.Duration(share)*s.p.HostPerImage
	c := seconds(s.p.ComputeTime(share).Seconds() * s.jitter(w, step))
	m.fwd = m.prepEnd + c/3
	m.bwdEnd = m.prepEnd + c
	w.addBusy(m.prepEnd, m.bwdEnd)
	w.busyUntil = m.bwdEnd
	k := runKey{w.gen, step}
	r := s.runs[k]
	if r == nil {
		r = &stepRun{members: make([]*memberRun, w.size)}
		s.runs[k] = r
		if at, ok := s.broken[w.gen]; ok {
			r.broken, r.brokenAt = true, at
		}
	}
	r.members[w.rank] = m
	r.started++
	if r.broken {
		s.ringFault(m, k)
		return
	}
	if r.started == w.size {
		s.schedule(k, r)
	}
}

func (s *sim) ringTime(n, size int) time.Duration {
	k := [2]int{n, size}
	if t, ok := s.ringT[k]; ok {
		return t
	}
	t := RingTime(n, size, s.p.ChunkBytes, s.p.Link)
	s.ringT[k] = t
	return t
}

// schedule lays out the step's all-reduce once every rank has started it:
// bucket by bucket as backward finishes each tail (on every rank: the
// ring waits for the slowest), then the BatchNorm buffers, after whatever
// rank 0's link is still sending (an upload to the coordinator); each rank
// then applies the update, does its snapshot work if the step is a
// snapshot, and reports.
func (s *sim) schedule(k runKey, r *stepRun) {
	r.scheduled = true
	size := len(r.members)
	end := time.Duration(0)
	if size > 1 {
		w0 := r.members[0].w
		end = w0.egress
		for _, b := range s.buckets {
			start := end
			for _, m := range r.members {
				start = max(start, m.fwd+time.Duration(b.Frac*float64(m.bwdEnd-m.fwd)))
			}
			end = start + s.ringTime(b.Floats, size)
		}
		for _, m := range r.members {
			end = max(end, m.bwdEnd)
		}
		end += s.ringTime(s.p.Net.Buffers, size)
		w0.egress = max(w0.egress, end)
	} else {
		end = r.members[0].bwdEnd
	}
	r.reduceEnd = end
	for _, m := range r.members {
		s.at(end+s.p.Apply+m.snap, func() { s.localDone(m, k, r) })
	}
}

// localDone: m applied step k (and did its snapshot work); it reports and
// starts its next queued task. The report is sent by another goroutine:
// a state in it occupies the link, not the worker.
func (s *sim) localDone(m *memberRun, k runKey, r *stepRun) {
	w := m.w
	if !w.alive || w.tok != m.tok || r.broken {
		return
	}
	w.applied = k.step
	rep := &control.Report{Worker: w.name, Gen: k.gen, Step: k.step, Loss: 0.5, Count: len(m.task.Indices), Checksum: checksum(k.step),
		RingSeconds: (r.reduceEnd - m.bwdEnd).Seconds()}
	if m.task.SendState {
		rep.State = snapState{k.gen, k.step}
	}
	s.sendReport(w, rep)
	s.advance(w)
}

// sendReport sends rep (with a state, when it carries one) over w's link,
// after what the link is already sending.
func (s *sim) sendReport(w *worker, rep *control.Report) {
	bytes := float64(reportBytes)
	if rep.State != nil {
		bytes = s.p.Protocol.StateBytes(s.p.Net)
	}
	rate := math.Min(s.p.Link.Rate(), s.p.CoordLink.Rate())
	start := max(s.now, w.egress)
	xfer := seconds(bytes / rate)
	if rep.State != nil {
		w.egress = start + xfer
	}
	arrive := start + xfer + s.p.Link.Overhead + s.p.Link.Latency
	sess := w.session
	s.at(arrive, func() {
		if w.session == sess {
			s.recv(rep)
		}
	})
}
