// Package worker computes noise-prediction gradients on its share of each
// training batch, reduces them with its ring neighbours and applies the
// agreed update to its replica of the network. The same Member serves a
// single-machine run (driven in process by the coordinator) and a cluster
// (behind a gRPC session: Join).
package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

// Task is one step's work for one worker.
type Task struct {
	Step    int64 // global step, 0-based
	Epoch   int
	Indices []int // the examples of this worker's share of the batch
	Seed    uint64
	Flip    bool // random horizontal flips
}

// Result is a worker's contribution to a step.
type Result struct {
	Loss    float64   // mean loss over the share
	Count   int       // examples in the share
	Grads   []float32 // ∂(mean loss)/∂weights (times the share's scale); valid until the next Compute
	Buffers []float32 // BatchNorm running statistics after the share's forward
}

// Worker holds one replica of the network, its optimizer and its EMA
// network (the replica's whole state, which StateChecksum identifies and
// Snapshot copies).
type Worker struct {
	Name string
	// NoCompute (benchmarks only: tinct bench cluster) skips the work of a
	// step — no example is loaded, no forward or backward runs, the
	// gradient (whatever the vector holds) is announced final at once and
	// nothing is applied — so that a cluster's step is its protocol alone:
	// tasks, the ring's all-reduce of the full gradient and buffers,
	// snapshots and reports.
	NoCompute bool
	net       *model.UNet
	ema       *model.UNet // on net's backend instance (Close)
	rule      model.EMA
	opt       *model.Adam
	data      dataset.Examples

	arenas map[int]*model.Arena // by share size
	x0     nn.Tensor
	gray   nn.Tensor
	input  nn.Tensor
	noise  nn.Tensor
	nv     []float32
	bufs   []float32
}

// New makes a worker for a network of the given shape training on data,
// its replica on the device backend $TINCT_BACKEND names (nn.EnvDevice),
// else in host memory.
func New(name string, cfg model.Config, data dataset.Examples) (*Worker, error) {
	be, err := nn.EnvDevice()
	if err != nil {
		return nil, err
	}
	return NewOn(name, be, cfg, data)
}

// NewOn is New with the replica on be (a GPU's backend; nil: host memory),
// which the worker owns (Close). The EMA network lives on the same
// instance: the EMA update runs on the live network's backend over both
// networks' vectors, and one instance, one stream, keeps that in order.
func NewOn(name string, be nn.Compute, cfg model.Config, data dataset.Examples) (*Worker, error) {
	net, err := model.NewOn(be, cfg)
	if err != nil {
		if be != nil {
			be.Close()
		}
		return nil, fmt.Errorf("worker %s: %w", name, err)
	}
	ema, err := model.NewOn(be, cfg) // the same instance (see Close)
	if err != nil {
		if be != nil {
			be.Close()
		}
		return nil, fmt.Errorf("worker %s: the EMA network: %w", name, err)
	}
	return &Worker{Name: name, net: net, ema: ema, data: data, arenas: map[int]*model.Arena{}}, nil
}

// Close frees the replica's device memory, if it has any: the backend
// instance's, which holds the EMA network's too.
func (w *Worker) Close() {
	w.net.Close()
	if w.ema.Compute() != w.net.Compute() {
		w.ema.Close()
	}
}

// Load replaces the replica's whole state with a copy of st: the network,
// the EMA network (with st.Tracked batches, as the EMA update leaves it),
// Adam and the EMA rule.
func (w *Worker) Load(st trainstate.Replica) error {
	np, nb := w.net.NumParams(), w.net.NumBuffers()
	if len(st.Params) != np || len(st.Buffers) != nb || st.Adam == nil || len(st.Adam.M) != np || len(st.Adam.V) != np ||
		len(st.EMAParams) != np || len(st.EMABuffers) != nb {
		var m, v int
		if st.Adam != nil {
			m, v = len(st.Adam.M), len(st.Adam.V)
		}
		return fmt.Errorf("worker %s: state of %d weights, %d buffers, %d EMA weights, %d EMA buffers and Adam moments of %d and %d values for a network of %d weights and %d buffers",
			w.Name, len(st.Params), len(st.Buffers), len(st.EMAParams), len(st.EMABuffers), m, v, np, nb)
	}
	w.net.LoadParams(st.Params)
	w.net.SetBuffers(st.Buffers, st.Tracked)
	w.ema.LoadParams(st.EMAParams)
	w.ema.SetBuffers(st.EMABuffers, st.Tracked)
	w.rule = st.Rule
	opt := *st.Adam
	opt.M = append([]float32(nil), st.Adam.M...)
	opt.V = append([]float32(nil), st.Adam.V...)
	w.opt = &opt
	if err := errors.Join(w.net.LoadAdam(w.opt), w.net.Err(), w.ema.Err()); err != nil {
		return fmt.Errorf("worker %s: %w", w.Name, err)
	}
	return nil
}

// Compute runs forward and backward on the task's examples.
func (w *Worker) Compute(ctx context.Context, t Task) (Result, error) {
	return w.ComputeScaled(ctx, t, 1, nil)
}

// Grads is the replica's gradient vector, which Compute fills.
func (w *Worker) Grads() []float32 { return w.net.Grads }

// ComputeScaled is Compute with the gradient multiplied by scale (a share's
// weight in the batch's mean) and each finished tail of it announced to
// ready during backward (see model.UNet.BackwardNotify), so that its
// all-reduce can run while backward goes on. The loss is not scaled.
func (w *Worker) ComputeScaled(ctx context.Context, t Task, scale float32, ready func(from int)) (Result, error) {
	if w.opt == nil {
		return Result{}, fmt.Errorf("worker %s: no state loaded", w.Name)
	}
	n := len(t.Indices)
	if n == 0 {
		return Result{}, fmt.Errorf("worker %s: empty share at step %d", w.Name, t.Step)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if w.NoCompute {
		if ready != nil {
			ready(0)
		}
		w.bufs = w.net.Buffers(w.bufs[:0])
		return Result{Count: n, Grads: w.net.Grads, Buffers: w.bufs}, nil
	}
	size := w.data.ImageSize()
	ar, err := w.arena(n, size)
	if err != nil {
		return Result{}, err
	}
	for k, idx := range t.Indices {
		flip := t.Flip && rngs.Flip(t.Seed, t.Epoch, idx)
		c, g := w.x0.Image(k), w.gray.Image(k)
		if err := w.data.Load(idx, c, g, flip); err != nil {
			return Result{}, fmt.Errorf("worker %s: example %d: %w", w.Name, idx, err)
		}
		w.nv[k] = model.NoisyExample(c, g, w.noise.Image(k), w.input.Image(k), rngs.Example(t.Seed, t.Step, idx))
	}
	loss := w.net.TrainStep(ar, w.input.Batch(n), w.nv[:n], w.noise.Batch(n), scale, ready)
	w.bufs = w.net.Buffers(w.bufs[:0])
	if err := w.net.Err(); err != nil {
		return Result{}, fmt.Errorf("worker %s: step %d: %w", w.Name, t.Step, err)
	}
	return Result{Loss: float64(loss), Count: n, Grads: w.net.Grads, Buffers: w.bufs}, nil
}

// Apply updates the replica with the step's reduced gradient and the
// averaged BatchNorm statistics, then its EMA network by the rule: exactly
// what model.Commit does, so every replica's whole state is bitwise the
// same.
func (w *Worker) Apply(grads, buffers []float32, tracked int64) error {
	if w.NoCompute {
		return nil
	}
	model.Commit(w.net, w.ema, w.opt, w.rule, grads, buffers, tracked)
	if err := w.net.Err(); err != nil {
		return fmt.Errorf("worker %s: %w", w.Name, err)
	}
	return nil
}

// Params is a copy of the replica's weights (for consistency checks).
func (w *Worker) Params() []float32 { return w.net.ReadParams(nil) }

// Checksum identifies the replica's weights, buffers and batch count.
func (w *Worker) Checksum() []byte { return cluster.Checksum(w.net) }

// StateChecksum identifies the replica's whole state (cluster.StateChecksum):
// the network, the EMA network and Adam.
func (w *Worker) StateChecksum() []byte { return cluster.StateChecksum(w.net, w.ema, w.opt) }

// Snapshot is a copy of the replica's whole state, the trainstate.Replica
// the coordinator loads (State.Load): fresh slices and Adam, downloaded
// from a device, so it stays as it is through later steps. A device's
// failure shows in the next Apply or Compute (and in the checksums). The
// state must have been loaded.
func (w *Worker) Snapshot() trainstate.Replica {
	opt := *w.opt
	if w.net.OnDevice() {
		opt.M, opt.V = make([]float32, len(w.opt.M)), make([]float32, len(w.opt.V))
		w.net.ReadAdam(&opt)
	} else {
		opt.M, opt.V = append([]float32(nil), w.opt.M...), append([]float32(nil), w.opt.V...)
	}
	return trainstate.Replica{Params: w.net.ReadParams(nil), Buffers: w.net.Buffers(nil), Tracked: w.net.BatchesTracked(), Adam: &opt,
		EMAParams: w.ema.ReadParams(nil), EMABuffers: w.ema.Buffers(nil), Rule: w.rule}
}

// arena returns the arena for shares of n images, on the replica's
// backend, and sizes the host's input buffers.
func (w *Worker) arena(n, size int) (*model.Arena, error) {
	if ar, ok := w.arenas[n]; ok && ar.H == size && w.x0.N >= n && w.x0.H == size {
		return ar, nil
	}
	ar, err := w.net.NewArena(n, size, size)
	if err != nil {
		return nil, err
	}
	w.arenas[n] = ar
	if w.x0.N < n || w.x0.H != size {
		w.x0 = nn.NewTensor(n, 3, size, size)
		w.gray = nn.NewTensor(n, 1, size, size)
		w.input = nn.NewTensor(n, 4, size, size)
		w.noise = nn.NewTensor(n, 3, size, size)
		w.nv = make([]float32, n)
	}
	return ar, nil
}
