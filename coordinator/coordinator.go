// Package coordinator drives training: it holds the committed state (the
// master weights, optimizer moments, EMA weights, BatchNorm buffers, step
// and epoch), shards each epoch's shuffled batches across its workers,
// reduces their gradients, applies the same update to its copy as every
// worker applies to its replica, and writes metrics, sample grids and
// checkpoints. Single-machine training is this coordinator with one
// in-process worker; the cluster puts the network between them.
package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/track"
	"github.com/tinct/tinct/worker"
)

// ErrInterrupted is returned by Run when its context ends before the last
// epoch; the position was checkpointed first.
var ErrInterrupted = errors.New("training interrupted; checkpoint saved (continue with resume=true)")

// Peer is how the coordinator reaches a worker.
type Peer interface {
	Name() string
	Load(ctx context.Context, st *worker.State) error
	Compute(ctx context.Context, t worker.Task) (worker.Result, error)
	Apply(ctx context.Context, grads, buffers []float32, tracked int64) error
}

// Local is a worker in this process.
type Local struct{ W *worker.Worker }

func (l Local) Name() string                                   { return l.W.Name }
func (l Local) Load(_ context.Context, st *worker.State) error { return l.W.Load(st) }
func (l Local) Compute(ctx context.Context, t worker.Task) (worker.Result, error) {
	return l.W.Compute(ctx, t)
}
func (l Local) Apply(_ context.Context, g, b []float32, tracked int64) error {
	l.W.Apply(g, b, tracked)
	return nil
}

// Options are a coordinator's parts.
type Options struct {
	Config   *config.Config
	Train    worker.Source // training examples
	Val      worker.Source // sample-grid examples; nil for none
	Store    checkpoint.Store
	Track    *track.Writer // nil: no metrics
	Log      *slog.Logger
	Progress io.Writer       // progress bar; nil: none
	Metrics  *track.Registry // Prometheus gauges; nil: none
	// AfterStep, if set, is called after every committed step (tests).
	AfterStep func(step int64)
	// Cluster, if set, runs every step on remote workers (see cluster.go)
	// instead of the joined peers.
	Cluster *Cluster
}

// Coordinator is the committed state and the loop around it.
type Coordinator struct {
	opt   Options
	cfg   *config.Config
	net   *model.UNet
	ema   *model.UNet
	adam  *model.Adam
	rule  model.EMA
	peers []Peer

	epoch       int   // current epoch, 0-based
	stepInEpoch int   // steps committed in the current epoch
	step        int64 // steps committed in all

	saved      int64 // step of the last checkpoint written or restored (−1: none)
	gauges     gauges
	grad, bufs []float32
	epochLoss  float64
	epochCount int
}

// New initialises the state from the seed.
func New(opt Options) (*Coordinator, error) {
	cfg := opt.Config
	mc := model.DefaultConfig()
	mc.Widths, mc.BlockDepth = cfg.Model.Widths, cfg.Model.BlockDepth
	net, err := model.New(mc)
	if err != nil {
		return nil, err
	}
	net.Init(rand.New(rand.NewPCG(cfg.Seed, 0x5eed)))
	ema, _ := model.New(mc)
	ema.CopyFrom(net)
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Train.ImageSize() != cfg.ImageSize {
		return nil, fmt.Errorf("training set has %d×%d images, config image_size=%d", opt.Train.ImageSize(), opt.Train.ImageSize(), cfg.ImageSize)
	}
	return &Coordinator{opt: opt, cfg: cfg, net: net, ema: ema, adam: model.NewAdam(net.NumParams(), cfg.LR),
		rule:  model.EMA{Decay: cfg.EMA.Decay, CopyBuffers: cfg.EMA.Buffers == "copy"},
		saved: -1, grad: make([]float32, net.NumParams()), bufs: make([]float32, net.NumBuffers()), gauges: newGauges(opt.Metrics)}, nil
}

// gauges are the coordinator's Prometheus metrics.
type gauges struct {
	workers, step, epoch, loss, imagesPerSec, stepSeconds, reduceSeconds, checkpoints *track.Metric
}

func newGauges(r *track.Registry) gauges {
	if r == nil {
		r = track.NewRegistry() // unserved
	}
	return gauges{
		workers:       r.Gauge("tinct_workers", "Workers taking part in training steps."),
		step:          r.Gauge("tinct_step", "Training steps committed."),
		epoch:         r.Gauge("tinct_epoch", "Current epoch (1-based)."),
		loss:          r.Gauge("tinct_loss", "Mean loss of the last committed step."),
		imagesPerSec:  r.Gauge("tinct_images_per_second", "Training images per second over the last step."),
		stepSeconds:   r.Gauge("tinct_step_seconds", "Wall time of the last step."),
		reduceSeconds: r.Gauge("tinct_allreduce_seconds", "Time the last step spent reducing gradients."),
		checkpoints:   r.Counter("tinct_checkpoints_total", "Checkpoints written."),
	}
}

// Step is the number of committed steps; Epoch the current epoch.
func (c *Coordinator) Step() int64 { return c.step }
func (c *Coordinator) Epoch() int  { return c.epoch }

// Net and EMA expose the committed networks.
func (c *Coordinator) Net() *model.UNet { return c.net }
func (c *Coordinator) EMA() *model.UNet { return c.ema }

// Optimizer exposes the committed optimizer state.
func (c *Coordinator) Optimizer() *model.Adam { return c.adam }

// Join hands a peer the committed state and adds it to the next step.
func (c *Coordinator) Join(ctx context.Context, p Peer) error {
	if err := p.Load(ctx, c.state()); err != nil {
		return fmt.Errorf("join %s: %w", p.Name(), err)
	}
	c.peers = append(c.peers, p)
	c.gauges.workers.Set(float64(len(c.peers)))
	c.opt.Log.Info("worker joined", "worker", p.Name(), "workers", len(c.peers), "step", c.step)
	return nil
}

func (c *Coordinator) state() *worker.State {
	return &worker.State{Params: c.net.Params, Buffers: c.net.Buffers(nil), Tracked: c.net.BatchesTracked(), Opt: c.adam}
}

// StepsPerEpoch is the number of batches in an epoch (the last partial
// batch is dropped unless the set is smaller than one batch).
func (c *Coordinator) StepsPerEpoch() int {
	return max(1, c.opt.Train.Len()/c.cfg.BatchSize)
}

// Run trains until the configured number of epochs, then checkpoints. When
// ctx ends first it checkpoints where it is and returns ErrInterrupted.
func (c *Coordinator) Run(ctx context.Context) error {
	if len(c.peers) == 0 && c.opt.Cluster == nil {
		return errors.New("no workers")
	}
	spe := c.StepsPerEpoch()
	n := c.opt.Train.Len()
	total := c.cfg.Epochs * spe
	var prog *track.Progress
	if c.opt.Progress != nil {
		prog = track.NewProgress(c.opt.Progress, total, "train")
		defer prog.Done()
	}
	lastTime := time.Now()
	for c.epoch < c.cfg.Epochs {
		perm := dataset.Permutation(n, c.cfg.Seed, c.epoch)
		for c.stepInEpoch < spe {
			if ctx.Err() != nil {
				if err := c.Checkpoint(context.WithoutCancel(ctx)); err != nil {
					return fmt.Errorf("checkpoint on interrupt: %w", err)
				}
				return ErrInterrupted
			}
			b := min(c.cfg.BatchSize, n)
			idx := perm[c.stepInEpoch*b : (c.stepInEpoch+1)*b]
			loss, err := c.trainStep(ctx, idx)
			if err != nil {
				if ctx.Err() != nil {
					continue // interrupted mid-step: nothing was applied; checkpoint above
				}
				return err
			}
			now := time.Now()
			secs := now.Sub(lastTime).Seconds()
			ips := float64(len(idx)) / secs
			lastTime = now
			c.gauges.step.Set(float64(c.step))
			c.gauges.epoch.Set(float64(c.epoch + 1))
			c.gauges.loss.Set(loss)
			c.gauges.imagesPerSec.Set(ips)
			c.gauges.stepSeconds.Set(secs)
			c.scalar("loss/step", c.step, loss)
			c.scalar("images_per_sec", c.step, ips)
			if prog != nil {
				prog.Update(int(c.step), "epoch", c.epoch+1, "loss", fmt.Sprintf("%.4f", loss), "img/s", fmt.Sprintf("%.1f", ips))
			}
			if c.opt.AfterStep != nil {
				c.opt.AfterStep(c.step)
			}
		}
		if err := c.endEpoch(ctx); err != nil {
			return err
		}
	}
	return nil
}

// trainStep runs one batch through the peers and commits it.
func (c *Coordinator) trainStep(ctx context.Context, idx []int) (float64, error) {
	if c.opt.Cluster != nil {
		return c.clusterStep(ctx, idx)
	}
	shares := split(idx, len(c.peers))
	results := make([]worker.Result, len(c.peers))
	for i, p := range c.peers {
		r, err := p.Compute(ctx, worker.Task{Step: c.step, Epoch: c.epoch, Indices: shares[i], Seed: c.cfg.Seed, Flip: c.cfg.Flip})
		if err != nil {
			return 0, fmt.Errorf("step %d: worker %s: %w", c.step, p.Name(), err)
		}
		results[i] = r
	}
	t0 := time.Now()
	loss := reduce(results, c.grad, c.bufs)
	c.gauges.reduceSeconds.Set(time.Since(t0).Seconds())
	tracked := c.net.BatchesTracked() + 1
	c.adam.Update(c.net.Params, c.grad)
	c.net.SetBuffers(c.bufs, tracked)
	c.rule.Update(c.ema, c.net)
	for _, p := range c.peers {
		if err := p.Apply(ctx, c.grad, c.bufs, tracked); err != nil {
			return 0, fmt.Errorf("step %d: apply on %s: %w", c.step, p.Name(), err)
		}
	}
	c.step++
	c.stepInEpoch++
	c.epochLoss += loss * float64(len(idx))
	c.epochCount += len(idx)
	return loss, nil
}

// reduce averages the peers' gradients and statistics, weighted by their
// share sizes, into grad and bufs, and returns the mean loss. One peer's
// result is copied as is.
func reduce(rs []worker.Result, grad, bufs []float32) float64 {
	if len(rs) == 1 {
		copy(grad, rs[0].Grads)
		copy(bufs, rs[0].Buffers)
		return rs[0].Loss
	}
	clear(grad)
	clear(bufs)
	total, loss := 0, 0.0
	for _, r := range rs {
		total += r.Count
	}
	for _, r := range rs {
		w := float32(r.Count) / float32(total)
		for i, g := range r.Grads {
			grad[i] += w * g
		}
		for i, b := range r.Buffers {
			bufs[i] += w * b
		}
		loss += r.Loss * float64(r.Count) / float64(total)
	}
	return loss
}

// split divides idx into n contiguous shares whose sizes differ by at most one.
func split(idx []int, n int) [][]int {
	out := make([][]int, n)
	for i := range n {
		out[i] = idx[i*len(idx)/n : (i+1)*len(idx)/n]
	}
	return out
}

func (c *Coordinator) endEpoch(ctx context.Context) error {
	mean := c.epochLoss / float64(max(c.epochCount, 1))
	done := c.epoch + 1
	c.opt.Log.Info("epoch done", "epoch", done, "of", c.cfg.Epochs, "mean_loss", fmt.Sprintf("%.5f", mean), "step", c.step)
	c.scalar("loss/epoch", int64(done), mean)
	c.epoch++
	c.stepInEpoch = 0
	c.epochLoss, c.epochCount = 0, 0
	if c.cfg.SampleEvery > 0 && (done%c.cfg.SampleEvery == 0 || done == c.cfg.Epochs) && c.opt.Val != nil && c.opt.Track != nil && ctx.Err() == nil {
		if err := c.sampleGrid(ctx, done); err != nil {
			return fmt.Errorf("sample grid: %w", err)
		}
	}
	if (c.cfg.CheckpointEvery > 0 && done%c.cfg.CheckpointEvery == 0) || done == c.cfg.Epochs {
		return c.Checkpoint(context.WithoutCancel(ctx)) // a save is finished even when interrupted
	}
	return nil
}

func (c *Coordinator) scalar(tag string, step int64, v float64) {
	if c.opt.Track == nil {
		return
	}
	if err := c.opt.Track.Scalar(tag, step, v); err != nil {
		c.opt.Log.Warn("metrics", "err", err)
	}
}

// sampleGrid colorizes the first sample_images validation images with the
// EMA network and records rows gray / generated / ground truth.
func (c *Coordinator) sampleGrid(ctx context.Context, epoch int) error {
	k := min(c.cfg.SampleImages, c.opt.Val.Len())
	if k == 0 {
		return nil
	}
	s := c.cfg.ImageSize
	color, gray := nn.NewTensor(k, 3, s, s), nn.NewTensor(k, 1, s, s)
	for i := range k {
		if err := c.opt.Val.Load(i, color.Image(i), gray.Image(i), false); err != nil {
			return err
		}
	}
	sampler, err := model.NewSampler(c.ema, k, s, s)
	if err != nil {
		return err
	}
	out, err := sampler.Colorize(ctx, gray, 1, c.cfg.SampleSteps, rand.New(rand.NewPCG(c.cfg.Seed, 0x6a1d)), nil)
	if err != nil {
		return err
	}
	rows := make([][]image.Image, 3)
	for i := range k {
		rows[0] = append(rows[0], track.ToImage(gray.Image(i), 1, s, s))
		rows[1] = append(rows[1], track.ToImage(out.Image(i), 3, s, s))
		rows[2] = append(rows[2], track.ToImage(color.Image(i), 3, s, s))
	}
	return c.opt.Track.Image("samples", int64(epoch), track.Grid(rows, 2))
}

// position is the loop counters a checkpoint records.
type position struct {
	Epoch       int    `json:"epoch"`
	StepInEpoch int    `json:"step_in_epoch"`
	Step        int64  `json:"step"`
	Seed        uint64 `json:"seed"`
	// the current epoch's loss so far, so its mean survives a resume
	EpochLossSum float64 `json:"epoch_loss_sum"`
	EpochCount   int     `json:"epoch_count"`
}

// Checkpoint saves the committed state to the store and prunes old ones.
// A state already saved is not saved again.
func (c *Coordinator) Checkpoint(ctx context.Context) error {
	if c.opt.Store == nil || c.saved == c.step {
		return nil
	}
	parts := map[string][]byte{}
	put := func(name string, ts map[string]model.Tensor) error {
		b, err := encode(ts)
		parts[name] = b
		return err
	}
	if err := put("weights.safetensors", c.net.StateDict()); err != nil {
		return err
	}
	if err := put("ema.safetensors", c.ema.StateDict()); err != nil {
		return err
	}
	if err := put("optimizer.safetensors", map[string]model.Tensor{
		"adam.m": model.F32(c.adam.M, len(c.adam.M)), "adam.v": model.F32(c.adam.V, len(c.adam.V)), "adam.step": model.I64(c.adam.Step),
	}); err != nil {
		return err
	}
	pos, _ := json.MarshalIndent(position{Epoch: c.epoch, StepInEpoch: c.stepInEpoch, Step: c.step, Seed: c.cfg.Seed, EpochLossSum: c.epochLoss, EpochCount: c.epochCount}, "", "  ")
	parts["state.json"] = pos
	parts["config.yaml"] = c.cfg.YAML()
	ck := &checkpoint.Checkpoint{Name: fmt.Sprintf("step-%09d", c.step), Step: c.step, Epoch: c.epoch, Time: time.Now(), Parts: parts}
	if err := c.opt.Store.Save(ctx, ck); err != nil {
		return err
	}
	c.saved = c.step
	c.gauges.checkpoints.Add(1)
	c.opt.Log.Info("checkpoint saved", "name", ck.Name, "store", c.opt.Store.String(), "epoch", c.epoch, "step", c.step)
	if c.cfg.KeepLast > 0 {
		removed, err := c.opt.Store.Prune(ctx, c.cfg.KeepLast)
		if err != nil {
			c.opt.Log.Warn("prune checkpoints", "err", err)
		} else if len(removed) > 0 {
			c.opt.Log.Info("old checkpoints removed", "names", removed)
		}
	}
	return nil
}

// Resume restores the newest valid checkpoint in the store. It reports
// false when the store holds none.
func (c *Coordinator) Resume(ctx context.Context) (bool, error) {
	ck, warns, err := c.opt.Store.Latest(ctx)
	for _, w := range warns {
		c.opt.Log.Warn("checkpoint skipped", "err", w)
	}
	if errors.Is(err, checkpoint.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := c.restore(ck); err != nil {
		return false, fmt.Errorf("resume from %s: %w", ck.Name, err)
	}
	c.opt.Log.Info("resumed", "checkpoint", ck.Name, "epoch", c.epoch, "step", c.step)
	return true, nil
}

func (c *Coordinator) restore(ck *checkpoint.Checkpoint) error {
	var pos position
	if err := json.Unmarshal(ck.Parts["state.json"], &pos); err != nil {
		return fmt.Errorf("state.json: %w", err)
	}
	if pos.Seed != c.cfg.Seed {
		c.opt.Log.Warn("resuming with another seed than the checkpoint's: the run will not repeat the original", "checkpoint_seed", pos.Seed, "seed", c.cfg.Seed)
	}
	load := func(part string) (map[string]model.Tensor, error) {
		b, ok := ck.Parts[part]
		if !ok {
			return nil, fmt.Errorf("checkpoint has no %s", part)
		}
		ts, _, err := model.ReadSafetensors(bytesReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", part, err)
		}
		return ts, nil
	}
	w, err := load("weights.safetensors")
	if err != nil {
		return err
	}
	e, err := load("ema.safetensors")
	if err != nil {
		return err
	}
	o, err := load("optimizer.safetensors")
	if err != nil {
		return err
	}
	if err := c.net.LoadStateDict(w); err != nil {
		return fmt.Errorf("weights: %w", err)
	}
	if err := c.ema.LoadStateDict(e); err != nil {
		return fmt.Errorf("ema: %w", err)
	}
	m, err1 := o["adam.m"].Float32s()
	v, err2 := o["adam.v"].Float32s()
	st, err3 := o["adam.step"].Int64()
	if err := errors.Join(err1, err2, err3); err != nil || len(m) != len(c.adam.M) || len(v) != len(c.adam.V) {
		return fmt.Errorf("optimizer state does not fit the network: %v", err)
	}
	copy(c.adam.M, m)
	copy(c.adam.V, v)
	c.adam.Step = st
	c.epoch, c.stepInEpoch, c.step = pos.Epoch, pos.StepInEpoch, pos.Step
	c.epochLoss, c.epochCount = pos.EpochLossSum, pos.EpochCount
	c.saved = c.step
	if c.stepInEpoch >= c.StepsPerEpoch() {
		return fmt.Errorf("checkpoint at step %d of an epoch, but an epoch has %d steps with this batch size and data", c.stepInEpoch, c.StepsPerEpoch())
	}
	// peers that joined before the resume get the restored state
	for _, p := range c.peers {
		if err := p.Load(context.Background(), c.state()); err != nil {
			return err
		}
	}
	return nil
}

// Peers lists the workers in the ring order.
func (c *Coordinator) Peers() []string {
	var names []string
	for _, p := range c.peers {
		names = append(names, p.Name())
	}
	return slices.Clip(names)
}
