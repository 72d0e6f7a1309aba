package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/tinct/tinct/allreduce"
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

	// Coordinator.
	Commit   time.Duration // apply the update to the master copy (Adam, BN, EMA) and checksum it
	CoordMsg time.Duration // serial work per message in (report, ready, join) or out (task)

	Link      Link // every worker's link
	CoordLink Link // the coordinator's link (zero: as Link)

	ChunkBytes int // ring chunk (allreduce.DefaultChunkBytes)
	MinBucket  int // smallest gradient tail reduced during backward (worker.OverlapBucket floats)

	Protocol Protocol // nil: Today

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

	// Measurement: the window starts when Warmup steps are committed and
	// lasts Duration of simulated time, or (Duration 0) Steps steps.
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

// Protocol is the coordinator's path in the simulation: what of a step
// reaches the coordinator and when a worker may start the next step.
// Today's protocol is built; others may be models (Model true) of
// protocols that are not.
type Protocol interface {
	Name() string
	// Model reports that this is a model of a protocol that is not built.
	Model() bool
	// Ahead is how many steps beyond the newest task it has received a
	// worker may compute: 0 (today) starts each step when its task arrives.
	Ahead() int
	// UploadBytes is what rank sends the coordinator with its report.
	UploadBytes(rank int, n Network) float64
}

// Today is the built protocol: each step's task is sent after the
// previous step is committed; rank 0 sends the reduced update with its
// report; the coordinator applies it and checks every replica's checksum
// before the next step's tasks go out.
type Today struct{}

func (Today) Name() string { return "today" }
func (Today) Model() bool  { return false }
func (Today) Ahead() int   { return 0 }
func (Today) UploadBytes(rank int, n Network) float64 {
	if rank == 0 {
		return 4 * float64(n.Params+n.Buffers)
	}
	return reportBytes
}

// IdealPipelined is a MODEL, not a built protocol: a worker starts step
// s+1 as soon as it has applied step s (its replica already holds the new
// state), without waiting for the coordinator's commit of s; it may not
// start s+2 before the task of s+1 (sent when s is committed) arrives, so
// the coordinator is at most one step behind. Uploads, the commit and the
// checksum comparison are as today, but off the workers' critical path
// (rank 0's upload shares its link with the next step's ring).
type IdealPipelined struct{}

func (IdealPipelined) Name() string { return "ideal-pipelined (model)" }
func (IdealPipelined) Model() bool  { return true }
func (IdealPipelined) Ahead() int   { return 1 }
func (IdealPipelined) UploadBytes(rank int, n Network) float64 {
	return Today{}.UploadBytes(rank, n)
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
		Commit:       57 * time.Millisecond,
		CoordMsg:     5 * time.Microsecond,
		Link:         Link{Bandwidth: 10 * Gbit, StreamRate: 3e9, Latency: 100 * time.Microsecond, Overhead: 10 * time.Microsecond},
		ChunkBytes:   allreduce.DefaultChunkBytes,
		MinBucket:    tworker.OverlapBucket,
		StepTimeout:  10 * time.Minute,
		SetupTimeout: time.Minute,
		RingTimeout:  time.Minute,
		Backoff:      time.Second,
		MaxFailures:  6,

		ProbeInterval: time.Second,
		ProbeTimeout:  500 * time.Millisecond,
		SuspicionMult: 4,
		Reconnect:     time.Second,

		Warmup: 5,
		Steps:  20,
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
		p.Protocol = Today{}
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

// UploadTime is rank 0's upload of the update to the coordinator.
func (p *Params) UploadTime() time.Duration {
	b := p.Protocol.UploadBytes(0, p.Net)
	rate := math.Min(p.Link.Rate(), p.CoordLink.Rate())
	return p.Link.Overhead + p.Link.Latency + seconds(b/rate)
}
