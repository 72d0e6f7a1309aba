package control

import (
	"fmt"
	"strings"
	"time"
)

// Event is something the adapter tells the core.
type Event interface{ event() }

// Tick only advances time (deadlines, back-offs, the wait for workers).
type Tick struct{}

// Join: a worker opened an authenticated session. Session is the adapter's
// id for it, unique over the run (never 0).
type Join struct {
	Worker  string
	Session uint64
}

// Leave: a worker's session ended.
type Leave struct {
	Worker  string
	Session uint64
	Reason  string
}

// Suspect: failure detection (memberlist) declared a worker dead. The core
// drops its session; a live worker rejoins with a fresh state.
type Suspect struct {
	Worker  string
	Session uint64
	Reason  string
}

// Ready: a worker loaded the state of generation Gen and listens for its
// ring at Addr ("" in a world of one).
type Ready struct {
	Worker string
	Gen    uint64
	Addr   string
}

// Report: a worker computed, reduced and applied its share of a step (or
// failed to: Err).
type Report struct {
	Worker   string
	Gen      uint64
	Step     int64
	Loss     float64 // mean over the share
	Count    int     // examples in the share
	Checksum []byte  // of the replica's whole state after the step (at a snapshot step; else none)
	// State is the replica after the step, when the task asked for it
	// (SendState); the core passes it on to the Commit without looking.
	State       any
	RingSeconds float64 // time spent reducing after backward finished
	Err         string
	// RingFault: the step failed in the ring (a peer did not answer or went
	// away), not in this worker's own work.
	RingFault bool
}

// Applied: the adapter loaded a Commit's snapshot as the coordinator's
// copy, whose whole state's checksum is Checksum.
type Applied struct {
	Step     int64
	Checksum []byte
}

// Stop: end training now (a signal, or a failure of the adapter: Err).
// The committed state is checkpointed first.
type Stop struct {
	Reason string
	Err    error
}

func (Tick) event()    {}
func (Join) event()    {}
func (Leave) event()   {}
func (Suspect) event() {}
func (Ready) event()   {}
func (*Report) event() {}
func (Applied) event() {}
func (Stop) event()    {}

// Action is something the core asks the adapter to do.
type Action interface {
	action()
	String() string
}

// Setup: start ring generation Gen over Ring (by rank): send every member
// the committed state and its rank; each answers Ready.
type Setup struct {
	Gen  uint64
	Ring []string
	Step int64
}

// Formed: every member of generation Gen is ready.
type Formed struct {
	Gen  uint64
	Ring []string
	Step int64
}

// Task: one member's share of a step.
type Task struct {
	Worker     string
	Gen        uint64
	Step       int64
	Epoch      int
	Rank, Size int
	Indices    []int // the examples of this share
	Batch      int   // examples in the whole batch
	Seed       uint64
	Flip       bool
	Next       string // the next rank's ring address
	Snapshot   bool   // report the whole state's checksum after the step
	SendState  bool   // and send the state itself (rank 0 at a snapshot step)
}

// Commit: every member agreed on steps From..Step, and Step was a
// snapshot: load State (rank 0's replica after Step) as the coordinator's
// copy, then answer Applied with its whole state's checksum before any
// other event. When it matches what the replicas reported, the steps follow
// as Committed actions.
type Commit struct {
	Gen        uint64
	Step, From int64
	State      any
	Workers    []string
}

// Committed: step Step is part of the committed state — once each, in
// order (Of steps were committed with the same snapshot).
type Committed struct {
	Gen         uint64
	Step        int64
	Epoch       int
	Workers     []string
	Loss        float64 // mean over the batch
	Count       int
	RingSeconds float64 // the slowest member's reduce time after backward
	Of          int
}

// Abandon: the setup or step in flight is given up; nothing of it is
// committed. The ring is re-formed from the committed state.
type Abandon struct {
	Gen    uint64
	Step   int64
	Reason string
}

// Drop: end a worker's session (it may rejoin with a fresh state).
type Drop struct {
	Worker  string
	Session uint64
	Reason  string
}

// Backoff: a worker failed and sits out the next Until of training.
type Backoff struct {
	Worker   string
	Until    time.Duration
	Failures int
	Reason   string
}

// Exclude: a worker failed too often in a row; its session is ended and it
// is refused from now on.
type Exclude struct {
	Worker  string
	Session uint64 // 0: not connected
	Reason  string
}

// Refuse: an excluded worker tried to join; end that session with Reason.
type Refuse struct {
	Worker  string
	Session uint64
	Reason  string
}

// Wait: fewer than Need workers are eligible; the core waits up to Limit.
type Wait struct {
	Have, Need int
	Step       int64
	Limit      time.Duration
}

// EpochDone: the last step of epoch Epoch (1-based) was committed.
type EpochDone struct {
	Epoch    int
	Step     int64
	MeanLoss float64
}

// Save: checkpoint the committed state (at step Step).
type Save struct {
	Step   int64
	Reason string
}

// Finish: training is over — finished (Err nil) or stopped by Err. Tell
// every worker Reason.
type Finish struct {
	Err    error
	Reason string
}

func (Setup) action()     {}
func (Formed) action()    {}
func (*Task) action()     {}
func (*Commit) action()   {}
func (Committed) action() {}
func (Abandon) action()   {}
func (Drop) action()      {}
func (Backoff) action()   {}
func (Exclude) action()   {}
func (Refuse) action()    {}
func (Wait) action()      {}
func (EpochDone) action() {}
func (Save) action()      {}
func (Finish) action()    {}

func (a Setup) String() string {
	return fmt.Sprintf("setup gen=%d ring=[%s] step=%d", a.Gen, strings.Join(a.Ring, " "), a.Step)
}
func (a Formed) String() string {
	return fmt.Sprintf("formed gen=%d ring=[%s] step=%d", a.Gen, strings.Join(a.Ring, " "), a.Step)
}
func (a *Task) String() string {
	s := fmt.Sprintf("task %s gen=%d step=%d epoch=%d rank=%d/%d batch=%d idx=%v next=%s", a.Worker, a.Gen, a.Step, a.Epoch, a.Rank, a.Size, a.Batch, a.Indices, a.Next)
	switch {
	case a.SendState:
		s += " snapshot+state"
	case a.Snapshot:
		s += " snapshot"
	}
	return s
}
func (a *Commit) String() string {
	return fmt.Sprintf("commit gen=%d steps=%d..%d workers=[%s]", a.Gen, a.From, a.Step, strings.Join(a.Workers, " "))
}
func (a Committed) String() string {
	return fmt.Sprintf("committed step=%d epoch=%d loss=%.4g count=%d", a.Step, a.Epoch, a.Loss, a.Count)
}
func (a Abandon) String() string {
	return fmt.Sprintf("abandon gen=%d step=%d: %s", a.Gen, a.Step, a.Reason)
}
func (a Drop) String() string { return fmt.Sprintf("drop %s: %s", a.Worker, a.Reason) }
func (a Backoff) String() string {
	return fmt.Sprintf("backoff %s %v failures=%d: %s", a.Worker, a.Until, a.Failures, a.Reason)
}
func (a Exclude) String() string { return fmt.Sprintf("exclude %s: %s", a.Worker, a.Reason) }
func (a Refuse) String() string  { return fmt.Sprintf("refuse %s: %s", a.Worker, a.Reason) }
func (a Wait) String() string {
	return fmt.Sprintf("wait have=%d need=%d step=%d up to %v", a.Have, a.Need, a.Step, a.Limit)
}
func (a EpochDone) String() string {
	return fmt.Sprintf("epoch-done epoch=%d step=%d mean_loss=%.4g", a.Epoch, a.Step, a.MeanLoss)
}
func (a Save) String() string { return fmt.Sprintf("save step=%d (%s)", a.Step, a.Reason) }
func (a Finish) String() string {
	if a.Err != nil {
		return fmt.Sprintf("finish error: %v", a.Err)
	}
	return "finish: " + a.Reason
}
