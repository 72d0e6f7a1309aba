// Package control is the deterministic core of training: it decides who is
// in the ring, which share of which batch each member computes, when a step
// is agreed, committed or abandoned, when a worker is backed off or
// excluded, when to checkpoint and when training ends. Events go in
// (Handle), actions come out; there are no goroutines, clocks, sockets or
// files inside — time arrives with each event, as in etcd raft's
// Step/Ready. The coordinator package runs it over gRPC and memberlist, or
// with one in-process member for single-machine training: the same core and
// the same commit either way.
//
// The core imports only the standard library and two standard-library-only
// pieces of internal/: rngs (the epoch order; the package documents every
// random stream of a run) and trainpos (Position). TestStandardLibraryOnly
// keeps it so.
//
// # The pipeline
//
// The replicas apply every step themselves and go on: the core keeps up to
// Config.Window steps in flight beyond the last one every replica agreed on
// (every rank reported it, with the same checksum if the step carries
// one), so a worker finds its next task queued when it finishes a step and
// never waits for the coordinator. The coordinator's copy of the state is
// not updated per step: every SnapshotEvery steps, at every epoch's end and
// before the ring is re-formed, the task asks the replicas for their whole
// state's checksum and rank 0 for the state itself (a snapshot); the
// adapter loads it as the committed state (Commit) and answers its checksum
// (Applied). Only then
// are the steps up to it committed (Committed), once each and in order, so
// metrics, epochs and checkpoints follow the committed state exactly as
// before. Whatever fails — a worker, the ring, a disagreement — abandons
// every step after the committed position, and the ring re-forms from the
// committed state: at most SnapshotEvery+Window steps are computed again,
// bitwise the same.
package control

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/internal/trainpos"
)

// ErrTooFewWorkers: fewer than MinWorkers were eligible for longer than Wait.
var ErrTooFewWorkers = errors.New("too few workers")

// ErrDiverged: the state the coordinator loaded from a snapshot differs
// from what every replica reported for that step, so the snapshot (or the
// coordinator's copy of it) is in doubt.
var ErrDiverged = errors.New("replicas differ from the coordinator's copy")

// Config is what the core needs of a run's configuration.
type Config struct {
	Examples        int    // training examples
	BatchSize       int    // examples per step (the last partial batch of an epoch is dropped)
	Epochs          int    // train until this many epochs are committed
	CheckpointEvery int    // epochs between checkpoints (0: only at the end)
	Seed            uint64 // the epoch permutations and every example's noise
	Flip            bool   // random horizontal flips
	// SnapshotEvery is how many steps apart the coordinator takes a
	// replica's state (and at every epoch's end; default 1: every step).
	SnapshotEvery int
	// Window is how many steps may be in flight beyond the last agreed one
	// (default 1: the next step is sent when the last is agreed).
	Window int

	MinWorkers   int           // fewer eligible: wait up to Wait, then stop (default 1)
	Wait         time.Duration // how long to wait for MinWorkers (default 60 s)
	StepTimeout  time.Duration // a ring member without a report by then has failed (default 10 min)
	SetupTimeout time.Duration // a member not ready by then has failed (default 60 s)
	Backoff      time.Duration // a failed worker sits out this long, doubled per consecutive failure (default 1 s)
	MaxBackoff   time.Duration // cap of the back-off (default 1 min)
	MaxFailures  int           // consecutive failures after which a worker is excluded (default 6)
}

// Defaults of the timing fields (a zero field takes these).
const (
	DefaultWait         = 60 * time.Second
	DefaultStepTimeout  = 10 * time.Minute
	DefaultSetupTimeout = 60 * time.Second
	DefaultBackoff      = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultMaxFailures  = 6
)

func (c *Config) defaults() error {
	if c.Examples <= 0 || c.BatchSize <= 0 || c.Epochs < 0 || c.SnapshotEvery < 0 || c.Window < 0 {
		return fmt.Errorf("control: %d examples, batch %d, %d epochs, snapshot every %d, window %d", c.Examples, c.BatchSize, c.Epochs, c.SnapshotEvery, c.Window)
	}
	c.MinWorkers = max(c.MinWorkers, 1)
	c.SnapshotEvery = max(c.SnapshotEvery, 1)
	c.Window = max(c.Window, 1)
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.Wait, DefaultWait)
	set(&c.StepTimeout, DefaultStepTimeout)
	set(&c.SetupTimeout, DefaultSetupTimeout)
	set(&c.Backoff, DefaultBackoff)
	set(&c.MaxBackoff, DefaultMaxBackoff)
	if c.MaxFailures <= 0 {
		c.MaxFailures = DefaultMaxFailures
	}
	return nil
}

// Position is how far training has come: what a checkpoint records of the
// loop besides the weights. It is defined in internal/trainpos, so that
// trainstate, which saves it, need not import the core.
type Position = trainpos.Position

type phase int

const (
	idle    phase = iota // no ring, or the ring must be re-formed before the next step
	forming              // Setup sent, collecting Ready
	running              // the ring is formed: steps are sent, agreed and committed
	stopped              // Finish emitted
)

// member is what the core knows of one worker, by name.
type member struct {
	name      string
	session   uint64 // the adapter's id of its current session; 0: not connected
	seq       int    // join order: ranks follow it
	failures  int    // consecutive failures
	lastErr   string
	notBefore time.Time // backed off until
	excluded  bool
}

// flight is a step sent to the ring and not yet committed.
type flight struct {
	step           int64
	epoch, inEpoch int
	snapshot       bool      // the replicas report their whole state's checksum; rank 0 sends its state
	reports        []*Report // by rank
	agreed         bool      // every rank reported the same checksum
	sum            []byte    // that checksum
	loss           float64   // mean over the batch, once agreed
	count          int
	ringSeconds    float64
}

// Core is the state machine. Not safe for concurrent use: one adapter
// goroutine feeds it.
type Core struct {
	cfg   Config
	spe   int // steps per epoch
	now   time.Time
	pos   Position
	saved int64 // step of the newest checkpoint written or restored; −1 none

	members map[string]*member
	seq     int

	phase     phase
	gen       uint64
	ring      []*member // the current generation's members by rank; nil: none
	addrs     []string  // their ring addresses
	deadline  time.Time // of the setup, or of the oldest step not agreed
	waitSince time.Time // when the core began waiting for MinWorkers; zero: not waiting
	ready     []string  // forming: ring address of each rank ("" not yet)

	flights  []*flight // running: the steps after the committed position, in order
	applying *flight   // the snapshot whose Commit awaits Applied
	// drain: the ring is to be re-formed without a fault (a worker joined
	// or came back): send no step after the next snapshot, commit it, then
	// form the new ring from the committed state
	drain bool
	// recheck: membership or a back-off changed since the running ring's
	// members were last compared with the eligible workers (comparing on
	// every report would cost O(N log N) a report at N workers)
	recheck bool
	wake    time.Time // the earliest end of a connected worker's back-off then (zero: none)

	// ringFaults counts the attempts at the current step that a ring fault
	// ended. A ring fault is charged to nobody at first: in a ring every
	// rank downstream of a stalled peer times out too, and the one whose
	// report arrives first is as likely innocent as not. Re-forming finds
	// the culprit (a stalled or dead worker fails the setup); when the same
	// step keeps failing in the ring, the reporters are charged after all.
	ringFaults int

	perm      []int // the permutation of epoch permEpoch
	permEpoch int

	out []Action
}

// maxRingFaults is how many ring faults in a row at one step go uncharged.
const maxRingFaults = 2

// New starts a core at pos (the zero Position for a fresh run, or a
// checkpoint's); saved says whether that position is already in the store.
func New(cfg Config, pos Position, saved bool) (*Core, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg, spe: max(1, cfg.Examples/cfg.BatchSize), pos: pos, saved: -1, members: map[string]*member{}, permEpoch: -1}
	if pos.StepInEpoch >= c.spe || pos.StepInEpoch < 0 {
		return nil, fmt.Errorf("position at step %d of an epoch, but an epoch has %d steps with batch_size %d and %d examples", pos.StepInEpoch, c.spe, cfg.BatchSize, cfg.Examples)
	}
	if saved {
		c.saved = pos.Step
	}
	return c, nil
}

// StepsPerEpoch is the number of batches in an epoch.
func (c *Core) StepsPerEpoch() int { return c.spe }

// Position is the committed position.
func (c *Core) Position() Position { return c.pos }

// Ring names the current generation's members by rank.
func (c *Core) Ring() []string { return names(c.ring) }

// Done reports whether the core has stopped.
func (c *Core) Done() bool { return c.phase == stopped }

// Deadline is the next time at which the core wants a Tick even if nothing
// else happens (zero: none).
func (c *Core) Deadline() time.Time {
	var d time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if c.phase == forming || c.oldestOpen() != nil {
		earlier(c.deadline)
	}
	if !c.waitSince.IsZero() {
		earlier(c.waitSince.Add(c.cfg.Wait))
	}
	for _, m := range c.members {
		if m.session != 0 && !m.excluded && m.notBefore.After(c.now) {
			earlier(m.notBefore)
		}
	}
	return d
}

// Handle applies one event at time now and returns the actions it calls
// for, in order. The slice is valid until the next call. A Commit must be
// answered (Applied) before any other event is handled.
func (c *Core) Handle(now time.Time, ev Event) []Action {
	c.out = c.out[:0]
	if now.After(c.now) {
		c.now = now
	}
	if c.phase == stopped {
		return nil
	}
	if !c.wake.IsZero() && !c.now.Before(c.wake) {
		c.recheck = true // a back-off has ended
	}
	switch e := ev.(type) {
	case Tick:
	case Join:
		c.join(e)
		if m := c.members[e.Worker]; c.phase == forming && m.session == e.Session && !c.now.Before(m.notBefore) && len(c.ring) < c.maxRing() {
			// nothing is computed yet: form again with the newcomer
			c.phase, c.ready = idle, nil
		}
	case Leave:
		if m := c.members[e.Worker]; m != nil && m.session == e.Session {
			m.session = 0
			c.lost(m, "left: "+e.Reason, false)
		}
	case Suspect:
		if m := c.members[e.Worker]; m != nil && m.session != 0 && m.session == e.Session {
			c.emit(Drop{Worker: m.name, Session: m.session, Reason: e.Reason})
			m.session = 0
			c.lost(m, e.Reason, true)
		}
	case Ready:
		c.onReady(e)
	case *Report:
		c.onReport(e)
	case Applied:
		c.onApplied(e)
	case Stop:
		c.abandonInFlight("coordinator stopping")
		c.finish(e.Err, e.Reason)
		return c.out
	default:
		panic(fmt.Sprintf("control: unknown event %T", ev))
	}
	c.checkDeadlines()
	c.advance()
	return c.out
}

func (c *Core) emit(a Action) { c.out = append(c.out, a) }

func (c *Core) join(e Join) {
	c.recheck = true
	m := c.members[e.Worker]
	if m == nil {
		m = &member{name: e.Worker}
		c.members[e.Worker] = m
	}
	if m.excluded {
		c.emit(Refuse{Worker: m.name, Session: e.Session, Reason: fmt.Sprintf("excluded after %d failures in a row (last: %s)", m.failures, m.lastErr)})
		return
	}
	if m.session != 0 {
		// a new session under a name still connected replaces the old one
		c.emit(Drop{Worker: m.name, Session: m.session, Reason: "replaced by a new session of the same name"})
		c.lost(m, "replaced by a new session", false)
	}
	c.seq++
	m.session, m.seq = e.Session, c.seq
}

// busy: a setup or a step not yet agreed is in flight.
func (c *Core) busy() bool { return c.phase == forming || c.oldestOpen() != nil }

// lost takes a worker out of what is in flight; failed counts it as the
// worker's failure (back-off, then exclusion).
func (c *Core) lost(m *member, why string, failed bool) {
	c.recheck = true
	inRing := slices.Contains(c.ring, m)
	if failed || (inRing && c.busy()) {
		c.fail(m, why)
	}
	if inRing {
		c.abandonInFlight(fmt.Sprintf("worker %s %s", m.name, why))
	}
}

// fail records one failure of m and backs it off.
func (c *Core) fail(m *member, why string) {
	c.recheck = true
	m.failures++
	m.lastErr = why
	if m.failures >= c.cfg.MaxFailures {
		m.excluded = true
		reason := fmt.Sprintf("excluded after %d failures in a row (last: %s)", m.failures, why)
		c.emit(Exclude{Worker: m.name, Session: m.session, Reason: reason})
		m.session = 0
		return
	}
	d := c.cfg.Backoff << (m.failures - 1)
	if d > c.cfg.MaxBackoff || d <= 0 {
		d = c.cfg.MaxBackoff
	}
	m.notBefore = c.now.Add(d)
	c.emit(Backoff{Worker: m.name, Until: d, Failures: m.failures, Reason: why})
}

// abandonInFlight gives up the setup or the steps in flight: nothing of
// them is committed (agreed steps not yet in a snapshot included), and the
// next step re-forms the ring from the committed state. A snapshot being
// applied stays: it is answered before anything else.
func (c *Core) abandonInFlight(why string) {
	switch {
	case c.phase == forming:
		c.emit(Abandon{Gen: c.gen, Step: c.pos.Step, Reason: why})
	case c.phase == running && len(c.flights) > 0:
		keep := 0
		if c.applying != nil {
			keep = slices.Index(c.flights, c.applying) + 1
		}
		if keep == len(c.flights) {
			break
		}
		c.emit(Abandon{Gen: c.gen, Step: c.flights[keep].step, Reason: why})
		clear(c.flights[keep:])
		c.flights = c.flights[:keep]
	case c.phase != running:
		return
	}
	c.phase, c.drain = idle, false
	c.ready = nil
}

func (c *Core) onReady(e Ready) {
	if c.phase != forming || e.Gen != c.gen {
		return
	}
	i := c.rank(e.Worker)
	if i < 0 || c.ready[i] != "" {
		return
	}
	c.ready[i] = e.Addr
	if c.ready[i] == "" {
		c.ready[i] = "-" // world of one: no ring server
	}
	for _, a := range c.ready {
		if a == "" {
			return
		}
	}
	c.addrs, c.ready = c.ready, nil
	c.phase = running
	c.emit(Formed{Gen: c.gen, Ring: names(c.ring), Step: c.pos.Step})
}

// flightOf is the step in flight that a report of (gen, step) answers.
func (c *Core) flightOf(gen uint64, step int64) *flight {
	if c.phase != running || gen != c.gen || len(c.flights) == 0 {
		return nil
	}
	i := step - c.flights[0].step
	if i < 0 || i >= int64(len(c.flights)) {
		return nil
	}
	return c.flights[i]
}

// oldestOpen is the earliest step in flight not yet agreed (nil: none).
func (c *Core) oldestOpen() *flight {
	if c.phase != running {
		return nil
	}
	for _, f := range c.flights {
		if !f.agreed {
			return f
		}
	}
	return nil
}

func (c *Core) onReport(r *Report) {
	f := c.flightOf(r.Gen, r.Step)
	if f == nil || f.agreed {
		return // late: an abandoned generation or step
	}
	i := c.rank(r.Worker)
	if i < 0 || f.reports[i] != nil {
		return
	}
	if r.Err != "" {
		if r.RingFault && c.ringFaults < maxRingFaults {
			c.ringFaults++
			c.abandonInFlight(fmt.Sprintf("the ring broke at step %d (reported by %s: %s)", f.step, r.Worker, r.Err))
			return
		}
		c.fail(c.ring[i], "step failed: "+r.Err)
		c.abandonInFlight(fmt.Sprintf("worker %s failed step %d: %s", r.Worker, f.step, r.Err))
		return
	}
	f.reports[i] = r
	for _, rep := range f.reports {
		if rep == nil {
			return
		}
	}
	c.agree(f)
}

// agree settles a step every rank reported: the same checksum everywhere
// agrees it; otherwise a strict majority's checksum wins and the others
// are dropped (they rejoin with the committed state), and without one
// every rank is charged. Either way of disagreeing abandons what is in
// flight and re-forms the ring from the committed state.
func (c *Core) agree(f *flight) {
	count := map[string]int{}
	best := ""
	for _, rep := range f.reports {
		k := string(rep.Checksum)
		count[k]++
		if count[k] > count[best] {
			best = k
		}
	}
	if len(count) > 1 {
		var bad []*member
		if 2*count[best] > len(f.reports) {
			for i, rep := range f.reports {
				if string(rep.Checksum) != best {
					bad = append(bad, c.ring[i])
				}
			}
		} else {
			bad = slices.Clone(c.ring)
		}
		reason := fmt.Sprintf("replica differs from the others after step %d", f.step)
		if len(bad) == len(c.ring) {
			reason = fmt.Sprintf("replicas disagree after step %d with no majority", f.step)
		}
		c.abandonInFlight(reason)
		for _, m := range bad {
			if len(bad) < len(c.ring) && m.session != 0 {
				c.emit(Drop{Worker: m.name, Session: m.session, Reason: reason})
				m.session = 0
			}
			c.fail(m, reason)
		}
		return
	}
	f.agreed, f.sum = true, f.reports[0].Checksum
	for _, rep := range f.reports {
		f.loss += rep.Loss * float64(rep.Count)
		f.count += rep.Count
		f.ringSeconds = max(f.ringSeconds, rep.RingSeconds)
	}
	f.loss /= float64(max(f.count, 1))
	c.ringFaults = 0
	if o := c.oldestOpen(); o != nil && o.step > f.step {
		c.deadline = c.now.Add(c.cfg.StepTimeout)
	}
	c.tryCommit()
}

// tryCommit hands the adapter the first agreed snapshot whose steps before
// it are all agreed.
func (c *Core) tryCommit() {
	if c.applying != nil {
		return
	}
	for _, f := range c.flights {
		if !f.agreed {
			return
		}
		if f.snapshot {
			c.applying = f
			first := c.flights[0].step
			c.emit(&Commit{Gen: c.gen, Step: f.step, From: first, State: f.reports[0].State, Workers: names(c.ring)})
			return
		}
	}
}

func (c *Core) onApplied(e Applied) {
	f := c.applying
	if f == nil || e.Step != f.step {
		return
	}
	c.applying = nil
	n := slices.Index(c.flights, f) + 1
	done := c.flights[:n:n]
	c.flights = slices.Clone(c.flights[n:])
	// the coordinator's copy holds the snapshot now: the position follows it
	epochDone := false
	for _, s := range done {
		c.pos.Step++
		c.pos.StepInEpoch++
		c.pos.EpochLossSum += s.loss * float64(s.count)
		c.pos.EpochCount += s.count
		c.emit(Committed{Gen: c.gen, Step: s.step, Epoch: s.epoch, Workers: names(c.ring), Loss: s.loss, Count: s.count, RingSeconds: s.ringSeconds, Of: len(done)})
		if c.pos.StepInEpoch >= c.spe {
			epochDone = true
			c.emit(EpochDone{Epoch: c.pos.Epoch + 1, Step: c.pos.Step, MeanLoss: c.pos.EpochLossSum / float64(max(c.pos.EpochCount, 1))})
			c.pos.Epoch, c.pos.StepInEpoch, c.pos.EpochLossSum, c.pos.EpochCount = c.pos.Epoch+1, 0, 0, 0
		}
	}
	if !bytes.Equal(e.Checksum, f.sum) {
		c.finish(fmt.Errorf("%w after step %d (coordinator %x, %s %x): stopping", ErrDiverged, f.step, short(e.Checksum), c.ring[0].name, short(f.sum)), "")
		return
	}
	for _, m := range c.ring {
		m.failures, m.lastErr = 0, ""
	}
	if epochDone {
		if c.pos.Epoch >= c.cfg.Epochs {
			c.finish(nil, "training finished")
			return
		}
		if c.cfg.CheckpointEvery > 0 && c.pos.Epoch%c.cfg.CheckpointEvery == 0 {
			c.save(fmt.Sprintf("epoch %d", c.pos.Epoch))
		}
	}
	c.tryCommit()
}

func short(b []byte) []byte { return b[:min(len(b), 8)] }

func (c *Core) save(why string) {
	if c.saved == c.pos.Step {
		return
	}
	c.saved = c.pos.Step
	c.emit(Save{Step: c.pos.Step, Reason: why})
}

// finish checkpoints the committed state (whatever the reason) and stops.
func (c *Core) finish(err error, reason string) {
	if err != nil && reason == "" {
		reason = err.Error()
	}
	c.save(reason)
	c.phase = stopped
	c.emit(Finish{Err: err, Reason: reason})
}

func (c *Core) rank(name string) int {
	return slices.IndexFunc(c.ring, func(m *member) bool { return m.name == name })
}

func (c *Core) checkDeadlines() {
	open := c.oldestOpen()
	if (c.phase != forming && open == nil) || c.now.Before(c.deadline) {
		return
	}
	var late []*member
	for i, m := range c.ring {
		if (c.phase == forming && c.ready[i] == "") || (open != nil && open.reports[i] == nil) {
			late = append(late, m)
		}
	}
	what := "load the state and open its ring"
	limit := c.cfg.SetupTimeout
	if open != nil {
		what, limit = fmt.Sprintf("report step %d", open.step), c.cfg.StepTimeout
	}
	c.abandonInFlight(fmt.Sprintf("%s did not %s within %v", names(late), what, limit))
	for _, m := range late {
		reason := fmt.Sprintf("did not %s within %v", what, limit)
		if m.session != 0 {
			c.emit(Drop{Worker: m.name, Session: m.session, Reason: reason})
			m.session = 0
		}
		c.fail(m, reason)
	}
}

// eligible lists the connected workers that are not backed off, in join order.
func (c *Core) eligible() []*member {
	var ms []*member
	for _, m := range c.members {
		if m.session != 0 && !m.excluded && !c.now.Before(m.notBefore) {
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b *member) int { return a.seq - b.seq })
	return ms
}

// candidates are the eligible workers a ring takes: a share of no example
// is no share, so workers beyond the batch's examples wait as spares, first
// to join first in.
func (c *Core) candidates() []*member {
	el := c.eligible()
	return el[:min(len(el), c.maxRing())]
}

// advance starts what comes next: a ring when there is none (or it must be
// re-formed), else as many steps as the window allows.
func (c *Core) advance() {
	if c.phase == forming || c.phase == stopped || c.applying != nil {
		return
	}
	if c.phase == running {
		if c.recheck && !c.drain && !slices.Equal(c.candidates(), c.ring) {
			c.drain = true // a newcomer, or a worker back from its back-off
		}
		if c.recheck {
			c.recheck, c.wake = false, time.Time{}
			for _, m := range c.members {
				if m.session != 0 && !m.excluded && m.notBefore.After(c.now) && (c.wake.IsZero() || m.notBefore.Before(c.wake)) {
					c.wake = m.notBefore
				}
			}
		}
		if c.drain && len(c.flights) == 0 {
			c.phase, c.drain = idle, false
		} else {
			c.send()
			return
		}
	}
	if c.pos.Epoch >= c.cfg.Epochs {
		c.finish(nil, "training finished")
		return
	}
	el := c.candidates()
	if len(el) < c.cfg.MinWorkers {
		if c.waitSince.IsZero() {
			c.waitSince = c.now
			c.emit(Wait{Have: len(el), Need: c.cfg.MinWorkers, Step: c.pos.Step, Limit: c.cfg.Wait})
		} else if !c.now.Before(c.waitSince.Add(c.cfg.Wait)) {
			c.finish(fmt.Errorf("%w: %d eligible, min_workers=%d, waited %v%s", ErrTooFewWorkers, len(el), c.cfg.MinWorkers, c.cfg.Wait, c.excludedNote()), "")
		}
		return
	}
	c.waitSince = time.Time{}
	c.gen++
	c.ring, c.addrs = el, nil
	c.ready = make([]string, len(el))
	c.phase, c.deadline = forming, c.now.Add(c.cfg.SetupTimeout)
	c.emit(Setup{Gen: c.gen, Ring: names(el), Step: c.pos.Step})
}

func (c *Core) excludedNote() string {
	var ex []string
	for _, m := range c.members {
		if m.excluded {
			ex = append(ex, fmt.Sprintf("%s (%s)", m.name, m.lastErr))
		}
	}
	if len(ex) == 0 {
		return ""
	}
	slices.Sort(ex)
	return fmt.Sprintf("; excluded: %v", ex)
}

// send sends the ring the next steps while the window allows: a step is
// sent when fewer than Window steps after the last agreed one are out, the
// committed position lags it by less than SnapshotEvery+Window, and no
// drain's snapshot has gone out yet.
func (c *Core) send() {
	for {
		agreed := c.pos.Step
		for _, f := range c.flights {
			if !f.agreed {
				break
			}
			agreed++
		}
		next := c.pos.Step + int64(len(c.flights))
		if next >= agreed+int64(c.cfg.Window) || next >= c.pos.Step+int64(c.cfg.SnapshotEvery+c.cfg.Window) {
			return
		}
		if n := len(c.flights); n > 0 && c.drain && c.flights[n-1].snapshot {
			return
		}
		// the step's place: epochs after the committed position
		k := c.pos.StepInEpoch + len(c.flights)
		epoch, inEpoch := c.pos.Epoch+k/c.spe, k%c.spe
		if epoch >= c.cfg.Epochs {
			return
		}
		f := &flight{step: next, epoch: epoch, inEpoch: inEpoch, reports: make([]*Report, len(c.ring)),
			snapshot: c.drain || inEpoch == c.spe-1 || (next+1)%int64(c.cfg.SnapshotEvery) == 0}
		if c.oldestOpen() == nil {
			c.deadline = c.now.Add(c.cfg.StepTimeout)
		}
		c.flights = append(c.flights, f)
		c.sendStep(f)
	}
}

// sendStep sends every ring member its share of f's batch.
func (c *Core) sendStep(f *flight) {
	if c.permEpoch != f.epoch {
		c.perm, c.permEpoch = rngs.Permutation(c.cfg.Examples, c.cfg.Seed, f.epoch), f.epoch
	}
	b := min(c.cfg.BatchSize, c.cfg.Examples)
	idx := c.perm[f.inEpoch*b : (f.inEpoch+1)*b]
	n := len(c.ring)
	shares := Split(idx, n)
	for i, m := range c.ring {
		c.emit(&Task{Worker: m.name, Gen: c.gen, Step: f.step, Epoch: f.epoch, Rank: i, Size: n, Indices: shares[i], Batch: len(idx),
			Seed: c.cfg.Seed, Flip: c.cfg.Flip, Next: c.addrs[(i+1)%n], Snapshot: f.snapshot, SendState: f.snapshot && i == 0})
	}
}

// maxRing is the largest ring: one example per member.
func (c *Core) maxRing() int { return min(c.cfg.BatchSize, c.cfg.Examples) }

// Split divides idx into n contiguous shares whose sizes differ by at most one.
func Split(idx []int, n int) [][]int {
	out := make([][]int, n)
	for i := range n {
		out[i] = idx[i*len(idx)/n : (i+1)*len(idx)/n]
	}
	return out
}

func names(ms []*member) []string {
	s := make([]string, 0, len(ms))
	for _, m := range ms {
		s = append(s, m.name)
	}
	return s
}
