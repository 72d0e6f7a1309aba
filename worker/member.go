package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/tinct/tinct/allreduce"
	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/trainstate"
)

// OverlapBucket is the smallest gradient tail (floats) reduced on its own
// while backward runs: 1 MiB, about 8% of the U-Net's gradient.
const OverlapBucket = 1 << 18

// Member is a worker's part in the training protocol, whatever carries it:
// it loads the committed state for a ring generation (Setup), then for
// every task computes its share, sums the weighted gradient and BatchNorm
// buffers around the ring, applies the sums and reports (Step). A world of
// one needs no ring. The coordinator drives a Member in process for
// single-machine training and through Join's gRPC session in a cluster.
type Member struct {
	W          *Worker
	RingListen string            // address of the ring server ("127.0.0.1:0")
	Advertise  string            // host the ring neighbour dials ("": RingListen's, or this machine's address when that is 0.0.0.0)
	Secret     []byte            // the ring's handshake secret
	Security   *cluster.Security // TLS of the ring's connections; nil: plaintext (in-process members on loopback)
	Timeout    time.Duration     // the all-reduce deadline
	Log        *slog.Logger
	// OnStep, if set, is called after each applied step (tests).
	OnStep func(w *Worker, step int64)

	gen        uint64
	rank, size int
	ring       *allreduce.Ring
	connected  bool
}

// Name is the worker's name.
func (m *Member) Name() string { return m.W.Name }

// Close shuts the ring server down.
func (m *Member) Close() {
	if m.ring != nil {
		_ = m.ring.Close()
		m.ring = nil
	}
}

// Setup loads st and, in a world of more than one, opens this rank's ring
// server; it returns the ring's address ("" in a world of one).
func (m *Member) Setup(gen uint64, rank, size int, st trainstate.Replica) (string, error) {
	m.Close()
	if err := m.W.Load(st); err != nil {
		return "", err
	}
	m.gen, m.rank, m.size, m.connected = gen, rank, size, false
	if size == 1 {
		return "", nil
	}
	log := m.Log
	if log == nil {
		log = slog.Default()
	}
	cfg := allreduce.Config{Rank: rank, Size: size, Listen: m.RingListen, Secret: m.Secret, Timeout: m.Timeout, Logger: log, Generation: gen}
	if sec := m.Security; sec != nil {
		junk := &cluster.Junk{Log: log, Port: "all-reduce " + m.RingListen}
		cfg.Creds = sec.Creds(junk)
		if !sec.Encrypted() {
			cfg.Wrap = func(l net.Listener) net.Listener { return cluster.WatchPreface(l, junk) }
		}
	}
	ring, err := allreduce.Listen(cfg)
	if err != nil {
		return "", err
	}
	m.ring = ring
	return cluster.Advertised(ring.Addr(), m.Advertise)
}

// ringError marks a step that failed in the ring rather than in this
// worker's own work.
type ringError struct{ error }

func (e ringError) Unwrap() error { return e.error }

// Step computes the share, all-reduces the weighted gradient and buffers,
// applies the update (Adam, the buffers, the EMA) and reports; at a
// snapshot step the report carries the checksum of the replica's whole
// state, and a copy of that state when the task asks for it. tracked is the
// BatchNorm batch count after this step.
func (m *Member) Step(ctx context.Context, t *control.Task, tracked int64) *control.Report {
	rep := &control.Report{Worker: m.W.Name, Gen: t.Gen, Step: t.Step}
	fail := func(err error) *control.Report {
		rep.Err = err.Error()
		rep.RingFault = errors.Is(err, allreduce.ErrBroken) || errors.As(err, new(ringError))
		switch {
		case m.Log == nil:
		case ctx.Err() != nil: // the worker is stopping: not a fault
			m.Log.Debug("step given up", "step", t.Step, "generation", t.Gen, "err", err)
		default:
			m.Log.Warn("step failed", "step", t.Step, "generation", t.Gen, "err", err)
		}
		return rep
	}
	if t.Gen != m.gen || (m.size > 1 && m.ring == nil) {
		return fail(fmt.Errorf("task of generation %d, worker is at %d", t.Gen, m.gen))
	}
	if m.size > 1 && !m.connected {
		if err := m.ring.Connect(ctx, t.Next); err != nil {
			return fail(ringError{err})
		}
		m.connected = true
	}
	task := Task{Step: t.Step, Epoch: t.Epoch, Indices: t.Indices, Seed: t.Seed, Flip: t.Flip}
	var res Result
	var err error
	if m.size == 1 {
		if res, err = m.W.Compute(ctx, task); err != nil {
			return fail(err)
		}
	} else {
		// Each share's gradient is weighted by its part of the batch and
		// summed around the ring bucket by bucket while backward is still
		// producing the rest (DDP-style overlap); the BatchNorm buffers,
		// known after the forward pass, follow in one more call.
		wt := float32(len(t.Indices)) / float32(t.Batch)
		o := m.ring.Overlap(ctx, t.Step, m.W.Grads(), OverlapBucket)
		res, err = m.W.ComputeScaled(ctx, task, wt, o.Ready)
		waitStart := time.Now()
		if werr := o.Wait(); err == nil && werr != nil {
			err = ringError{werr}
		}
		if err != nil {
			return fail(err)
		}
		bufs := res.Buffers // the worker's own copy, refilled every step
		for i := range bufs {
			bufs[i] *= wt
		}
		if err := m.ring.AllReduce(ctx, t.Step, bufs); err != nil {
			return fail(ringError{err})
		}
		rep.RingSeconds = time.Since(waitStart).Seconds()
	}
	if err := m.W.Apply(res.Grads, res.Buffers, tracked); err != nil {
		return fail(err) // the replica is no longer the committed state's
	}
	rep.Loss, rep.Count = res.Loss, res.Count
	if t.Snapshot {
		// only here: a replica that went astray is found at the next
		// snapshot, and any disagreement gives up everything since the
		// last one, so a checksum between snapshots would only find it
		// sooner — at the price of hashing every weight every step
		// (4.5 ms for 2M parameters on this CPU; a download of them all
		// from a GPU)
		rep.Checksum = m.W.StateChecksum()
	}
	if t.SendState {
		rep.State = m.W.Snapshot()
	}
	if m.OnStep != nil {
		m.OnStep(m.W, t.Step)
	}
	return rep
}
