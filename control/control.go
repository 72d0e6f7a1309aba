// Package control is the deterministic core of training: it decides who is
// in the ring, which share of which batch each member computes, when a step
// is committed or abandoned, when a worker is backed off or excluded, when
// to checkpoint and when training ends. Events go in (Handle), actions come
// out; there are no goroutines, clocks, sockets or files inside — time
// arrives with each event, as in etcd raft's Step/Ready. The coordinator
// package runs it over gRPC and memberlist, or with one in-process member
// for single-machine training: the same core and the same commit either way.
package control

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tinct/tinct/dataset"
)

// ErrTooFewWorkers: fewer than MinWorkers were eligible for longer than Wait.
var ErrTooFewWorkers = errors.New("too few workers")

// ErrDiverged: every replica's checksum differs from the coordinator's copy
// after a commit, so the coordinator's own update is in doubt.
var ErrDiverged = errors.New("replicas differ from the coordinator's copy")

// Config is what the core needs of a run's configuration.
type Config struct {
	Examples        int    // training examples
	BatchSize       int    // examples per step (the last partial batch of an epoch is dropped)
	Epochs          int    // train until this many epochs are committed
	CheckpointEvery int    // epochs between checkpoints (0: only at the end)
	Seed            uint64 // the epoch permutations and every example's noise
	Flip            bool   // random horizontal flips

	MinWorkers   int           // fewer eligible: wait up to Wait, then stop (default 1)
	Wait         time.Duration // how long to wait for MinWorkers (default 60 s)
	StepTimeout  time.Duration // a ring member without a report by then has failed (default 10 min)
	SetupTimeout time.Duration // a member not ready by then has failed (default 60 s)
	Backoff      time.Duration // a failed worker sits out this long, doubled per consecutive failure (default 1 s)
	MaxBackoff   time.Duration // cap of the back-off (default 1 min)
	MaxFailures  int           // consecutive failures after which a worker is excluded (default 6)
}

func (c *Config) defaults() error {
	if c.Examples <= 0 || c.BatchSize <= 0 || c.Epochs < 0 {
		return fmt.Errorf("control: %d examples, batch %d, %d epochs", c.Examples, c.BatchSize, c.Epochs)
	}
	c.MinWorkers = max(c.MinWorkers, 1)
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.Wait, 60*time.Second)
	set(&c.StepTimeout, 10*time.Minute)
	set(&c.SetupTimeout, 60*time.Second)
	set(&c.Backoff, time.Second)
	set(&c.MaxBackoff, time.Minute)
	if c.MaxFailures <= 0 {
		c.MaxFailures = 6
	}
	return nil
}

// Position is how far training has come: what a checkpoint records of the
// loop besides the weights.
type Position struct {
	Epoch       int   `json:"epoch"`         // current epoch, 0-based
	StepInEpoch int   `json:"step_in_epoch"` // steps committed in the current epoch
	Step        int64 `json:"step"`          // steps committed in all
	// the current epoch's loss so far, so that its mean survives a resume
	EpochLossSum float64 `json:"epoch_loss_sum"`
	EpochCount   int     `json:"epoch_count"`
}

type phase int

const (
	idle     phase = iota // between steps: form a ring or send the next step
	forming               // Setup sent, collecting Ready
	stepping              // Tasks sent, collecting Reports
	applying              // Commit emitted, waiting for Applied
	stopped               // Finish emitted
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
	dirty     bool      // the ring must be re-formed before the next step
	deadline  time.Time // of the setup or step in flight
	waitSince time.Time // when the core began waiting for MinWorkers; zero: not waiting

	ready   []string  // forming: ring address of each rank ("" not yet)
	reports []*Report // stepping: each rank's report
	commit  *Commit   // applying: what was committed

	// ringFaults counts the attempts at the current step that a ring fault
	// ended. A ring fault is charged to nobody at first: in a ring every
	// rank downstream of a stalled peer times out too, and the one whose
	// report arrives first is as likely innocent as not. Re-forming finds
	// the culprit (a stalled or dead worker fails the setup); when the same
	// step keeps failing in the ring, the reporters are charged after all.
	ringFaults int

	perm      []int // the current epoch's permutation
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
	if c.phase == forming || c.phase == stepping {
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
// for, in order. The slice is valid until the next call.
func (c *Core) Handle(now time.Time, ev Event) []Action {
	c.out = c.out[:0]
	if now.After(c.now) {
		c.now = now
	}
	if c.phase == stopped {
		return nil
	}
	switch e := ev.(type) {
	case Tick:
	case Join:
		c.join(e)
		if m := c.members[e.Worker]; c.phase == forming && m.session == e.Session && !c.now.Before(m.notBefore) {
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

// lost takes a worker out of what is in flight; failed counts it as the
// worker's failure (back-off, then exclusion).
func (c *Core) lost(m *member, why string, failed bool) {
	inRing := slices.Contains(c.ring, m)
	if failed || (inRing && c.phase != idle) {
		c.fail(m, why)
	}
	if inRing {
		c.abandonInFlight(fmt.Sprintf("worker %s %s", m.name, why))
		c.dirty = true
	}
}

// fail records one failure of m and backs it off.
func (c *Core) fail(m *member, why string) {
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

// abandonInFlight gives up the setup or step in flight: nothing of it is
// committed, and the next step re-forms the ring from the committed state.
func (c *Core) abandonInFlight(why string) {
	switch c.phase {
	case forming:
		c.emit(Abandon{Gen: c.gen, Step: c.pos.Step, Reason: why})
	case stepping:
		c.emit(Abandon{Gen: c.gen, Step: c.pos.Step, Reason: why})
	default:
		return
	}
	c.phase, c.dirty = idle, true
	c.ready, c.reports = nil, nil
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
	c.phase, c.dirty = idle, false
	c.emit(Formed{Gen: c.gen, Ring: names(c.ring), Step: c.pos.Step})
}

func (c *Core) onReport(r *Report) {
	if c.phase != stepping || r.Gen != c.gen || r.Step != c.pos.Step {
		return // late: an abandoned generation or step
	}
	i := c.rank(r.Worker)
	if i < 0 || c.reports[i] != nil {
		return
	}
	if r.Err != "" {
		if r.RingFault && c.ringFaults < maxRingFaults {
			c.ringFaults++
			c.abandonInFlight(fmt.Sprintf("the ring broke (reported by %s: %s)", r.Worker, r.Err))
			return
		}
		c.fail(c.ring[i], "step failed: "+r.Err)
		c.abandonInFlight(fmt.Sprintf("worker %s failed the step: %s", r.Worker, r.Err))
		return
	}
	c.reports[i] = r
	for _, rep := range c.reports {
		if rep == nil {
			return
		}
	}
	cm := &Commit{Gen: c.gen, Step: c.pos.Step, Epoch: c.pos.Epoch, Update: c.reports[0].Update, Workers: names(c.ring)}
	for _, rep := range c.reports {
		cm.Loss += rep.Loss * float64(rep.Count)
		cm.Count += rep.Count
		cm.RingSeconds = max(cm.RingSeconds, rep.RingSeconds)
	}
	cm.Loss /= float64(max(cm.Count, 1))
	c.commit, c.phase = cm, applying
	c.emit(cm)
}

func (c *Core) onApplied(e Applied) {
	if c.phase != applying || e.Step != c.pos.Step {
		return
	}
	cm := c.commit
	c.commit, c.phase, c.ringFaults = nil, idle, 0
	var bad []*member
	for i, rep := range c.reports {
		if !bytes.Equal(rep.Checksum, e.Checksum) {
			bad = append(bad, c.ring[i])
		}
	}
	first := c.reports[0].Checksum
	c.reports = nil
	// the coordinator's copy holds the step now: the position follows it
	c.pos.Step++
	c.pos.StepInEpoch++
	c.pos.EpochLossSum += cm.Loss * float64(cm.Count)
	c.pos.EpochCount += cm.Count
	epochDone := c.pos.StepInEpoch >= c.spe
	if epochDone {
		c.emit(EpochDone{Epoch: c.pos.Epoch + 1, Step: c.pos.Step, MeanLoss: c.pos.EpochLossSum / float64(max(c.pos.EpochCount, 1))})
		c.pos.Epoch, c.pos.StepInEpoch, c.pos.EpochLossSum, c.pos.EpochCount = c.pos.Epoch+1, 0, 0, 0
	}
	if len(bad) == len(c.ring) {
		c.finish(fmt.Errorf("%w after step %d (coordinator %x, %s %x): stopping", ErrDiverged, cm.Step, short(e.Checksum), c.ring[0].name, short(first)), "")
		return
	}
	for _, m := range c.ring {
		if !slices.Contains(bad, m) {
			m.failures, m.lastErr = 0, ""
		}
	}
	for _, m := range bad {
		// its replica diverged: drop it; it rejoins with the committed state
		reason := fmt.Sprintf("replica differs from the coordinator's copy after step %d", cm.Step)
		if m.session != 0 {
			c.emit(Drop{Worker: m.name, Session: m.session, Reason: reason})
			m.session = 0
		}
		c.fail(m, reason)
		c.dirty = true
	}
	if !epochDone {
		return
	}
	if c.pos.Epoch >= c.cfg.Epochs {
		c.finish(nil, "training finished")
		return
	}
	if c.cfg.CheckpointEvery > 0 && c.pos.Epoch%c.cfg.CheckpointEvery == 0 {
		c.save(fmt.Sprintf("epoch %d", c.pos.Epoch))
	}
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
	if (c.phase != forming && c.phase != stepping) || c.now.Before(c.deadline) {
		return
	}
	var late []*member
	for i, m := range c.ring {
		if (c.phase == forming && c.ready[i] == "") || (c.phase == stepping && c.reports[i] == nil) {
			late = append(late, m)
		}
	}
	what := "load the state and open its ring"
	limit := c.cfg.SetupTimeout
	if c.phase == stepping {
		what, limit = fmt.Sprintf("report step %d", c.pos.Step), c.cfg.StepTimeout
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

// advance starts what comes next when nothing is in flight.
func (c *Core) advance() {
	if c.phase != idle {
		return
	}
	if c.pos.Epoch >= c.cfg.Epochs {
		c.finish(nil, "training finished")
		return
	}
	el := c.eligible()
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
	if c.dirty || !slices.Equal(el, c.ring) {
		c.gen++
		c.ring, c.addrs, c.dirty = el, nil, true
		c.ready = make([]string, len(el))
		c.phase, c.deadline = forming, c.now.Add(c.cfg.SetupTimeout)
		c.emit(Setup{Gen: c.gen, Ring: names(el), Step: c.pos.Step})
		return
	}
	c.startStep()
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

// startStep sends every ring member its share of the next batch.
func (c *Core) startStep() {
	if c.permEpoch != c.pos.Epoch {
		c.perm, c.permEpoch = dataset.Permutation(c.cfg.Examples, c.cfg.Seed, c.pos.Epoch), c.pos.Epoch
	}
	b := min(c.cfg.BatchSize, c.cfg.Examples)
	idx := c.perm[c.pos.StepInEpoch*b : (c.pos.StepInEpoch+1)*b]
	n := len(c.ring)
	shares := Split(idx, n)
	c.reports = make([]*Report, n)
	c.phase, c.deadline = stepping, c.now.Add(c.cfg.StepTimeout)
	for i, m := range c.ring {
		c.emit(&Task{Worker: m.name, Gen: c.gen, Step: c.pos.Step, Epoch: c.pos.Epoch, Rank: i, Size: n, Indices: shares[i], Batch: len(idx),
			Seed: c.cfg.Seed, Flip: c.cfg.Flip, Next: c.addrs[(i+1)%n], SendUpdate: i == 0})
	}
}

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
