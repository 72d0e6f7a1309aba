package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/tinct/tinct/allreduce"
	"github.com/tinct/tinct/control"
	tworker "github.com/tinct/tinct/worker"
)

// Params describe one simulated cluster and run. Zero fields take the
// defaults of Defaults (see docs/sim.md for where each number comes from).
type Params struct {
	Workers   int     // ranks at the start
	ImageSize int     // image side (the network's work per image depends on it)
	Batch     int     // images per worker per step (the core's batch is Workers × Batch)
	FLOPS     float64 // sustained FLOP/s of one worker's forward and backward
	Net       Network // the model (DefaultNetwork(ImageSize) when Net.Params == 0)

	// Worker-side serial work per step besides the network.
	HostPerImage time.Duration // load, flip and noise of one example, before forward (0: 450 µs at 128², by pixels)
	Apply        time.Duration // apply the reduced update (Adam, BN buffers) and checksum the replica
	Load         time.Duration // load the committed state at a ring's set-up
	RingConnect  time.Duration // dial and authenticate the next rank (besides four hops), once per generation

	// Worker-side snapshot work (Pipelined): the device's copy-out and the
	// host's SHA-256, bytes per second.
	CopyRate, HashRate float64

	// Coordinator.
	Commit       time.Duration // Before: apply the update to its copy (Adam, BN, EMA) and checksum it, every step
	SnapshotLoad time.Duration // Pipelined: decode, load and hash one snapshot (every SnapshotEvery steps)
	CoordMsg     time.Duration // serial work per message in (report, ready, join) or out (task)

	Link      Link // every worker's link
	CoordLink Link // the coordinator's link (zero: as Link)

	ChunkBytes int // ring chunk (allreduce.DefaultChunkBytes)
	MinBucket  int // smallest gradient tail reduced during backward (worker.OverlapBucket floats)

	Protocol Protocol // nil: Pipelined{} (the built protocol, configs/config.yaml's cadence)
	// EpochSteps is the core's epoch, in steps; every epoch's last step is
	// a snapshot too (0: the smallest multiple of the protocol's
	// SnapshotEvery that is at least 16).
	EpochSteps int

	// Failure handling, as the coordinator is configured.
	StepTimeout, SetupTimeout, RingTimeout time.Duration
	Backoff                                time.Duration
	MaxFailures                            int
	// Memberlist (LAN profile): a node that stops answering is declared
	// dead after ProbeInterval + ProbeTimeout + SuspicionMult ×
	// max(1, log10(nodes)) × ProbeInterval (memberlist's minimum suspicion
	// timeout, reached once two others confirm).
	ProbeInterval, ProbeTimeout time.Duration
	SuspicionMult               int
	Reconnect                   time.Duration // a dropped live worker opens a new session after this

	// Jitter slows each worker's compute at each step by a factor drawn
	// uniformly from [1, 1+Jitter] (deterministic from Seed): stragglers.
	Jitter float64
	Seed   uint64

	Fault Fault

	// Measurement: the window starts at the first commit (Applied) that
	// leaves at least Warmup steps committed, and ends at the first commit
	// after Duration of simulated time, or (Duration 0) the first that
	// leaves at least Steps more committed. Windows so run from commit to
	// commit: whole snapshot periods.
	Warmup   int
	Steps    int
	Duration time.Duration

	Trace bool // keep every action of the core, with its time, in Result.Actions
}

// FaultMode is how a worker dies.
type FaultMode int

const (
	// Kill: the process dies on a live machine; its connections are reset,
	// so the coordinator's session and the ring neighbours see it at once.
	Kill FaultMode = iota
	// Crash: the machine is gone; nothing is reset. Memberlist declares it
	// dead (Suspect), the ring's calls stall until the ring timeout, and
	// the step timeout is the last resort.
	Crash
)

func (m FaultMode) String() string {
	if m == Crash {
		return "crash"
	}
	return "kill"
}

// ParseFaultMode reads "kill" or "crash".
func ParseFaultMode(s string) (FaultMode, error) {
	switch s {
	case "kill":
		return Kill, nil
	case "crash":
		return Crash, nil
	}
	return 0, fmt.Errorf("fault mode %q: want kill or crash", s)
}

// Fault kills workers during the window.
type Fault struct {
	Every time.Duration // a worker dies every Every (0: never)
	First time.Duration // the first death, after the window's start (0: Every/2)
	Mode  FaultMode
	// Rejoin: a replacement (same name, new session) joins this long after
	// a death; negative: never.
	Rejoin time.Duration
	// Same: the same worker dies each time (rank 1 at the start), else a
	// different one each time.
	Same bool
}

// Protocol is the coordinator's path in the simulation: the real core's
// cadence (Window, SnapshotEvery) and what a step and a snapshot cost
// beyond the core's decisions. Both protocols drive the same, real core;
// they differ in its configuration and in the costs the simulation puts
// on its actions.
type Protocol interface {
	Name() string
	// Window and SnapshotEvery are the core's (control.Config).
	Window() int
	SnapshotEvery() int
	// StateBytes is what rank 0 sends the coordinator with its report at a
	// step whose task says SendState.
	StateBytes(n Network) float64
	// SetupBytes is the state the coordinator sends each member at a ring
	// set-up.
	SetupBytes(n Network) float64
	// CommitTime is the coordinator's serial work on a Commit, before it
	// answers Applied.
	CommitTime(p *Params) time.Duration
	// SnapshotWork is a rank's serial work at a snapshot step beyond Apply
	// (sendState: its task says SendState), before its next step.
	SnapshotWork(p *Params, n Network, sendState bool) time.Duration
}

// Before is the protocol built until the pipelined one replaced it,
// reproduced by the new core's Window = 1, SnapshotEvery = 1 cadence (each
// step's tasks go out when the step before it is committed; every step is
// a "snapshot") with the old costs: rank 0 uploads the reduced update
// (gradient and BN buffers, 7.8 MB) with every report, and the coordinator
// applies it to its copy (Adam, EMA, checksum: Params.Commit, 57 ms) on
// its serial path before it answers Applied and the next tasks go out.
type Before struct{}

func (Before) Name() string       { return "before" }
func (Before) Window() int        { return 1 }
func (Before) SnapshotEvery() int { return 1 }
func (Before) StateBytes(n Network) float64 {
	return 4 * float64(n.Params+n.Buffers)
}
func (Before) SetupBytes(n Network) float64 {
	return 4 * float64(3*n.Params+n.Buffers) // weights, Adam's two moments, BN buffers
}
func (Before) CommitTime(p *Params) time.Duration { return p.Commit }

// SnapshotWork: none beyond Apply — the old report's update was the
// reduced vector, already on the host, and its checksum the weights'.
func (Before) SnapshotWork(*Params, Network, bool) time.Duration { return 0 }

// Pipelined is the built protocol: tasks for up to Window steps beyond the
// last agreed one are out, so a worker runs its queued steps back to back;
// every SnapshotEvery steps (and at every epoch's end) each rank reports
// its whole state's checksum and rank 0 sends the state itself (weights,
// EMA weights, Adam's moments, BN and EMA buffers), which the coordinator
// decodes, loads and hashes (Params.SnapshotLoad) off the workers' path.
// Zero fields: the defaults of configs/config.yaml (steps_in_flight 2,
// snapshot_every 50).
type Pipelined struct {
	InFlight, Every int // Window and SnapshotEvery
}

// Defaults of configs/config.yaml.
const (
	DefaultWindow        = 2
	DefaultSnapshotEvery = 50
)

func (q Pipelined) Name() string {
	if q.Window() == DefaultWindow && q.SnapshotEvery() == DefaultSnapshotEvery {
		return "pipelined"
	}
	return fmt.Sprintf("pipelined(%d,%d)", q.Window(), q.SnapshotEvery())
}
func (q Pipelined) Window() int {
	if q.InFlight <= 0 {
		return DefaultWindow
	}
	return q.InFlight
}
func (q Pipelined) SnapshotEvery() int {
	if q.Every <= 0 {
		return DefaultSnapshotEvery
	}
	return q.Every
}
func (Pipelined) StateBytes(n Network) float64       { return 4 * float64(4*n.Params+2*n.Buffers) }
func (q Pipelined) SetupBytes(n Network) float64     { return q.StateBytes(n) }
func (Pipelined) CommitTime(p *Params) time.Duration { return p.SnapshotLoad }

// SnapshotWork: the whole state's checksum (cluster.StateChecksum) hashes
// the EMA network and Adam's moments beyond the weights Apply's checksum
// covers — downloaded from the device and hashed on the host; rank 0 then
// copies the whole state out of the device (worker.Snapshot). Sending it is
// another goroutine's: it occupies rank 0's link, not its steps.
func (Pipelined) SnapshotWork(p *Params, n Network, sendState bool) time.Duration {
	extra := 4 * float64(3*n.Params+n.Buffers)
	d := seconds(extra/p.CopyRate + extra/p.HashRate)
	if sendState {
		d += seconds(4 * float64(4*n.Params+2*n.Buffers) / p.CopyRate)
	}
	return d
}

// reportBytes is a report without the update (loss, count, checksum, ids).
const reportBytes = 96

// Gbit is bytes per second of one Gbit/s.
const Gbit = 1e9 / 8

// Defaults are the parameters the defaults come from: a GPU worker at 20
// TFLOP/s on 10 Gbit/s links, 128² images, 32 per worker. Every guess is
// marked in docs/sim.md.
func Defaults() Params {
	return Params{
		Workers:      8,
		ImageSize:    128,
		Batch:        32,
		FLOPS:        20e12,
		HostPerImage: 450 * time.Microsecond,
		Apply:        5 * time.Millisecond,
		Load:         50 * time.Millisecond,
		RingConnect:  3 * time.Millisecond,
		CopyRate:     20e9,
		HashRate:     1.73e9,
		Commit:       57 * time.Millisecond,
		SnapshotLoad: 34 * time.Millisecond,
		CoordMsg:     5 * time.Microsecond,
		Link:         Link{Bandwidth: 10 * Gbit, StreamRate: 3e9, Latency: 100 * time.Microsecond, Overhead: 10 * time.Microsecond},
		ChunkBytes:   allreduce.DefaultChunkBytes,
		MinBucket:    tworker.OverlapBucket,
		StepTimeout:  control.DefaultStepTimeout,
		SetupTimeout: control.DefaultSetupTimeout,
		RingTimeout:  time.Minute,
		Backoff:      control.DefaultBackoff,
		MaxFailures:  control.DefaultMaxFailures,

		ProbeInterval: time.Second,
		ProbeTimeout:  500 * time.Millisecond,
		SuspicionMult: 4,
		Reconnect:     time.Second,

		Warmup: 5,
		Steps:  50,
	}
}

// fill sets the zero fields from Defaults and checks the rest.
func (p *Params) fill() error {
	d := Defaults()
	setD := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	setI := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	setI(&p.Workers, d.Workers)
	setI(&p.ImageSize, d.ImageSize)
	setI(&p.Batch, d.Batch)
	if p.FLOPS == 0 {
		p.FLOPS = d.FLOPS
	}
	if p.HostPerImage == 0 {
		// measured at 128² (BenchmarkHostPrep), proportional to the pixels
		p.HostPerImage = time.Duration(float64(d.HostPerImage) * float64(p.ImageSize*p.ImageSize) / float64(d.ImageSize*d.ImageSize))
	}
	setD(&p.Apply, d.Apply)
	setD(&p.Load, d.Load)
	setD(&p.RingConnect, d.RingConnect)
	setD(&p.Commit, d.Commit)
	setD(&p.SnapshotLoad, d.SnapshotLoad)
	if p.CopyRate == 0 {
		p.CopyRate = d.CopyRate
	}
	if p.HashRate == 0 {
		p.HashRate = d.HashRate
	}
	setD(&p.CoordMsg, d.CoordMsg)
	if p.Link.Bandwidth == 0 {
		p.Link = d.Link
	}
	if p.CoordLink.Bandwidth == 0 {
		p.CoordLink = p.Link
	}
	setI(&p.ChunkBytes, d.ChunkBytes)
	setI(&p.MinBucket, d.MinBucket)
	if p.Protocol == nil {
		p.Protocol = Pipelined{}
	}
	if p.EpochSteps == 0 {
		se := p.Protocol.SnapshotEvery()
		p.EpochSteps = se * ((16 + se - 1) / se)
	}
	setD(&p.StepTimeout, d.StepTimeout)
	setD(&p.SetupTimeout, d.SetupTimeout)
	setD(&p.RingTimeout, d.RingTimeout)
	setD(&p.Backoff, d.Backoff)
	setI(&p.MaxFailures, d.MaxFailures)
	setD(&p.ProbeInterval, d.ProbeInterval)
	setD(&p.ProbeTimeout, d.ProbeTimeout)
	setI(&p.SuspicionMult, d.SuspicionMult)
	setD(&p.Reconnect, d.Reconnect)
	if p.Duration == 0 {
		setI(&p.Steps, d.Steps)
	}
	if p.Net.Params == 0 {
		n, err := DefaultNetwork(p.ImageSize)
		if err != nil {
			return err
		}
		p.Net = n
	}
	switch {
	case p.Workers < 1 || p.Batch < 1 || p.FLOPS <= 0:
		return fmt.Errorf("sim: %d workers, batch %d, %g FLOP/s: all must be positive", p.Workers, p.Batch, p.FLOPS)
	case p.Link.Bandwidth <= 0 || p.CoordLink.Bandwidth <= 0:
		return fmt.Errorf("sim: link bandwidth must be positive")
	case p.Warmup < 0 || p.Steps < 0 || p.Duration < 0:
		return fmt.Errorf("sim: negative warm-up, steps or duration")
	case p.CopyRate <= 0 || p.HashRate <= 0:
		return fmt.Errorf("sim: copy and hash rates must be positive")
	case p.EpochSteps < 1:
		return fmt.Errorf("sim: an epoch of %d steps", p.EpochSteps)
	case p.Jitter < 0:
		return fmt.Errorf("sim: negative jitter")
	case p.Fault.Every < 0:
		return fmt.Errorf("sim: negative fault interval")
	}
	if p.Fault.Every > 0 && p.Fault.First == 0 {
		p.Fault.First = p.Fault.Every / 2
	}
	return nil
}

// Detect is how long memberlist takes to declare a silent node dead among
// nodes members (the model in Params' comment).
func (p *Params) Detect(nodes int) time.Duration {
	scale := math.Max(1, math.Log10(float64(max(nodes, 1))))
	return p.ProbeInterval + p.ProbeTimeout + time.Duration(float64(p.SuspicionMult)*scale*float64(p.ProbeInterval))
}

// ComputeTime is one worker's forward and backward on n images.
func (p *Params) ComputeTime(n int) time.Duration {
	return seconds(float64(n) * p.Net.FLOPsPerImage() / p.FLOPS)
}

// UploadTime is rank 0's upload of what its report carries at a
// snapshot (the update, Before; the state, Pipelined) to the coordinator.
func (p *Params) UploadTime() time.Duration {
	b := p.Protocol.StateBytes(p.Net)
	rate := math.Min(p.Link.Rate(), p.CoordLink.Rate())
	return p.Link.Overhead + p.Link.Latency + seconds(b/rate)
}
