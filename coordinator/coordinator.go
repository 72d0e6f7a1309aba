// Package coordinator runs training: it holds the committed state
// (trainstate), feeds the deterministic core (control) with what happens —
// workers joining and leaving, their reports, the clock — and carries out
// the core's actions: ring set-ups and tasks through a Transport, commits
// to the state, metrics, sample grids and checkpoints. The Transport is a
// worker in this process for single-machine training (Local) or remote
// workers over gRPC and memberlist (Remote); everything else is one path.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/track"
	"github.com/tinct/tinct/trainstate"
)

// ErrInterrupted is returned by Run when its context ends before the last
// epoch; the position was checkpointed first.
var ErrInterrupted = errors.New("training interrupted; checkpoint saved (continue with resume=true)")

// ErrTooFewWorkers: fewer than min_workers were eligible for longer than the wait.
var ErrTooFewWorkers = control.ErrTooFewWorkers

// Transport reaches the workers. Its calls must not block on a worker:
// answers (and joins, leaves, failures) come back as events on the channel
// given to Start.
type Transport interface {
	// Start begins delivering events.
	Start(events chan<- control.Event)
	// Setup hands a ring member the committed state, at step step, for
	// generation gen.
	Setup(worker string, gen uint64, rank, size int, step int64, st trainstate.Replica)
	// Task sends a member its share; tracked is the BatchNorm batch count
	// after the step.
	Task(t *control.Task, tracked int64)
	// Drop ends a worker's session with an outcome and a reason.
	Drop(worker string, session uint64, outcome cluster.Outcome, reason string)
	// Close tells every worker that training is over, and why.
	Close(outcome cluster.Outcome, reason string)
}

// Options are a coordinator's parts.
type Options struct {
	State *trainstate.State // the committed state (fresh or restored)
	Saved bool              // State is the newest checkpoint in Store already
	// Train names the training examples (their count shapes the epochs);
	// Val gives the sample-grid examples (nil: none).
	Train, Val dataset.Examples
	Transport  Transport
	Store      checkpoint.Store // nil: no checkpoints
	Track      *track.Writer    // nil: no metrics
	Log        *slog.Logger
	Progress   io.Writer       // progress bar; nil: none
	Metrics    *track.Registry // Prometheus gauges; nil: none
	// Cluster timing (zero: the core's defaults).
	MinWorkers                      int
	Wait, StepTimeout, SetupTimeout time.Duration
	Backoff                         time.Duration
	MaxFailures                     int
	// AfterStep, if set, is called after every committed step (tests).
	AfterStep func(step int64)
}

// Coordinator is the committed state and the loop around the core.
type Coordinator struct {
	opt       Options
	epochLoss float64 // the last finished epoch's mean loss
	st        *trainstate.State
	core      *control.Core
	log       *slog.Logger
	gauges    gauges
	prog      *track.Progress
	last      time.Time // of the last commit
	span      float64   // seconds per step since the commit before it
	queue     []control.Event
	saveErr   error // the last failed checkpoint
}

// New checks the parts and starts the core at the state's position.
func New(opt Options) (*Coordinator, error) {
	st := opt.State
	cfg := st.Config
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Train.ImageSize() != cfg.ImageSize {
		return nil, fmt.Errorf("training set has %d×%d images, config image_size=%d", opt.Train.ImageSize(), opt.Train.ImageSize(), cfg.ImageSize)
	}
	core, err := control.New(control.Config{Examples: opt.Train.Len(), BatchSize: cfg.BatchSize, Epochs: cfg.Epochs, CheckpointEvery: cfg.CheckpointEvery,
		Seed: cfg.Seed, Flip: cfg.Flip, SnapshotEvery: cfg.SnapshotEvery, Window: cfg.StepsInFlight, MinWorkers: opt.MinWorkers, Wait: opt.Wait, StepTimeout: opt.StepTimeout, SetupTimeout: opt.SetupTimeout,
		Backoff: opt.Backoff, MaxFailures: opt.MaxFailures}, st.Pos, opt.Saved)
	if err != nil {
		return nil, err
	}
	return &Coordinator{opt: opt, st: st, core: core, log: opt.Log, gauges: newGauges(opt.Metrics)}, nil
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
		reduceSeconds: r.Gauge("tinct_allreduce_seconds", "Time the last step spent reducing gradients after backward."),
		checkpoints:   r.Counter("tinct_checkpoints_total", "Checkpoints written."),
	}
}

// Step is the number of committed steps; Epoch the current epoch.
func (c *Coordinator) Step() int64 { return c.core.Position().Step }
func (c *Coordinator) Epoch() int  { return c.core.Position().Epoch }

// StepsPerEpoch is the number of batches in an epoch (the last partial
// batch is dropped unless the set is smaller than one batch).
func (c *Coordinator) StepsPerEpoch() int { return c.core.StepsPerEpoch() }

// EpochLoss is the mean loss of the last epoch finished in this run (0
// before one has).
func (c *Coordinator) EpochLoss() float64 { return c.epochLoss }

// Workers names the current ring's members by rank.
func (c *Coordinator) Workers() []string { return c.core.Ring() }

// Run trains until the configured number of epochs, then checkpoints. When
// ctx ends first it checkpoints where it is and returns ErrInterrupted;
// when training stops on an error, the committed state is checkpointed too.
func (c *Coordinator) Run(ctx context.Context) error {
	events := make(chan control.Event, 4096)
	c.opt.Transport.Start(events)
	if c.opt.Progress != nil {
		total := c.st.Config.Epochs * c.core.StepsPerEpoch()
		c.prog = track.NewProgress(c.opt.Progress, total, "train")
		defer c.prog.Done()
	}
	c.last = time.Now()
	interrupted := false
	// members the transport already has (in-process ones) join before the
	// first tick, so that the core does not report waiting for them
	for drained := false; !drained; {
		select {
		case ev := <-events:
			c.queue = append(c.queue, ev)
		default:
			drained = true
		}
	}
	c.queue = append(c.queue, control.Tick{})
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for len(c.queue) > 0 {
			ev := c.queue[0]
			c.queue = c.queue[1:]
			if done, err := c.handle(ctx, ev, interrupted); done {
				return err
			}
		}
		wake := time.Hour
		if d := c.core.Deadline(); !d.IsZero() {
			wake = max(time.Until(d), 0) + time.Millisecond
		}
		timer.Reset(wake)
		select {
		case ev := <-events:
			c.queue = append(c.queue, ev)
		case <-timer.C:
			c.queue = append(c.queue, control.Tick{})
		case <-ctx.Done():
			if !interrupted {
				interrupted = true
				c.queue = append(c.queue, control.Stop{Reason: "coordinator interrupted (checkpoint saved; it continues with resume=true)"})
			}
		}
	}
}

// handle feeds one event to the core and carries out its actions. It
// reports done with Run's result when the core has finished.
func (c *Coordinator) handle(ctx context.Context, ev control.Event, interrupted bool) (bool, error) {
	for _, a := range c.core.Handle(time.Now(), ev) {
		switch a := a.(type) {
		case control.Setup:
			rep := c.st.Replica()
			for rank, w := range a.Ring {
				c.opt.Transport.Setup(w, a.Gen, rank, len(a.Ring), a.Step, rep)
			}
		case control.Formed:
			c.gauges.workers.Set(float64(len(a.Ring)))
			c.log.Info("ring formed", "generation", a.Gen, "workers", a.Ring, "step", a.Step)
		case *control.Task:
			// the batch count after the step: the committed one plus the
			// steps between it and this one
			c.opt.Transport.Task(a, c.st.Net.BatchesTracked()+(a.Step-c.core.Position().Step)+1)
		case *control.Commit:
			c.commit(a)
		case control.Committed:
			c.committed(a)
		case control.Abandon:
			if _, stop := ev.(control.Stop); stop { // no ring is re-formed: the run stops
				c.log.Debug("steps in flight given up (nothing applied)", "from_step", a.Step, "reason", a.Reason)
				continue
			}
			c.log.Warn("step abandoned (nothing applied); the ring is re-formed from the committed state", "step", a.Step, "generation", a.Gen, "reason", a.Reason)
		case control.Drop:
			c.log.Warn("worker dropped; it may rejoin with a fresh state", "worker", a.Worker, "reason", a.Reason)
			c.opt.Transport.Drop(a.Worker, a.Session, cluster.Outcome_DROPPED, a.Reason)
		case control.Backoff:
			c.log.Warn("worker failed; backing off", "worker", a.Worker, "for", a.Until, "failures", a.Failures, "reason", a.Reason)
		case control.Exclude:
			c.log.Error("worker excluded", "worker", a.Worker, "reason", a.Reason)
			if a.Session != 0 {
				c.opt.Transport.Drop(a.Worker, a.Session, cluster.Outcome_EXCLUDED, a.Reason)
			}
		case control.Refuse:
			c.log.Warn("refused an excluded worker", "worker", a.Worker, "reason", a.Reason)
			c.opt.Transport.Drop(a.Worker, a.Session, cluster.Outcome_EXCLUDED, a.Reason)
		case control.Wait:
			c.gauges.workers.Set(float64(a.Have))
			c.log.Warn("waiting for workers", "have", a.Have, "min_workers", a.Need, "up_to", a.Limit, "step", a.Step)
		case control.EpochDone:
			c.endEpoch(ctx, a)
		case control.Save:
			if err := c.save(ctx); err != nil {
				c.log.Error("checkpoint failed", "step", a.Step, "err", err)
				c.saveErr = fmt.Errorf("checkpoint at step %d: %w", a.Step, err)
				c.queue = append(c.queue, control.Stop{Reason: "checkpoint failed", Err: c.saveErr})
			}
		case control.Finish:
			if a.Err == nil && c.saveErr != nil {
				// the save before the finish failed (the Stop queued
				// for it comes too late): the run did not end well
				a.Err = c.saveErr
			}
			return true, c.finish(a, interrupted)
		}
	}
	return false, nil
}

// commit loads a snapshot — rank 0's replica after the step — as the
// committed state and tells the core its checksum, which must be what every
// replica reported for that step. This, every snapshot_every steps, is all
// the coordinator does with the weights: its work per step does not grow
// with the network.
func (c *Coordinator) commit(a *control.Commit) {
	rep, ok := a.State.(trainstate.Replica)
	err := fmt.Errorf("no state in the report")
	if ok {
		err = c.st.LoadReplica(rep)
	}
	if err != nil {
		c.queue = append(c.queue, control.Stop{Reason: "bad snapshot", Err: fmt.Errorf("step %d: worker %s sent a snapshot that does not fit: %w", a.Step, a.Workers[0], err)})
		return
	}
	c.queue = append([]control.Event{control.Applied{Step: a.Step, Checksum: c.st.Checksum()}}, c.queue...)
	now := time.Now()
	c.span = now.Sub(c.last).Seconds() / float64(a.Step-a.From+1)
	c.last = now
}

// committed records a step that is part of the committed state now.
func (c *Coordinator) committed(a control.Committed) {
	secs := c.span
	ips := float64(a.Count) / secs
	step := a.Step + 1
	c.log.Debug("step committed", "step", step, "epoch", a.Epoch+1, "loss", a.Loss, "workers", a.Workers, "seconds", secs, "ring_seconds", a.RingSeconds)
	c.gauges.step.Set(float64(step))
	c.gauges.epoch.Set(float64(a.Epoch + 1))
	c.gauges.loss.Set(a.Loss)
	c.gauges.imagesPerSec.Set(ips)
	c.gauges.stepSeconds.Set(secs)
	c.gauges.reduceSeconds.Set(a.RingSeconds)
	c.gauges.workers.Set(float64(len(a.Workers)))
	c.scalar("loss/step", step, a.Loss)
	c.scalar("images_per_sec", step, ips)
	if c.prog != nil {
		c.prog.Update(int(step), "epoch", a.Epoch+1, "loss", fmt.Sprintf("%.4f", a.Loss), "img/s", fmt.Sprintf("%.1f", ips))
	}
	if c.opt.AfterStep != nil {
		c.opt.AfterStep(step)
	}
}

func (c *Coordinator) endEpoch(ctx context.Context, a control.EpochDone) {
	cfg := c.st.Config
	c.log.Info("epoch done", "epoch", a.Epoch, "of", cfg.Epochs, "mean_loss", fmt.Sprintf("%.5f", a.MeanLoss), "step", a.Step)
	c.epochLoss = a.MeanLoss
	c.scalar("loss/epoch", int64(a.Epoch), a.MeanLoss)
	c.flushMetrics()
	if cfg.SampleEvery > 0 && (a.Epoch%cfg.SampleEvery == 0 || a.Epoch == cfg.Epochs) && c.opt.Val != nil && c.opt.Track != nil && ctx.Err() == nil {
		if err := c.sampleGrid(ctx, a.Epoch); err != nil {
			c.log.Warn("sample grid", "epoch", a.Epoch, "err", err)
		}
		c.flushMetrics()
	}
}

// flushMetrics writes the buffered metrics to their files. The writer
// flushes by itself only every few seconds; flushing at every epoch end,
// checkpoint and exit means a crash loses at most the steps since, never
// an epoch's loss or what a checkpoint's run had recorded.
func (c *Coordinator) flushMetrics() {
	if c.opt.Track == nil {
		return
	}
	if err := c.opt.Track.Flush(); err != nil {
		c.log.Warn("metrics", "err", err)
	}
}

func (c *Coordinator) finish(a control.Finish, interrupted bool) error {
	c.flushMetrics()
	switch {
	case a.Err != nil:
		c.opt.Transport.Close(cluster.Outcome_FAILED, "coordinator stopped: "+a.Err.Error())
		return a.Err
	case interrupted:
		c.opt.Transport.Close(cluster.Outcome_INTERRUPTED, a.Reason)
		return ErrInterrupted
	default:
		c.opt.Transport.Close(cluster.Outcome_FINISHED, a.Reason)
		return nil
	}
}

// save checkpoints the committed state and prunes old checkpoints.
func (c *Coordinator) save(ctx context.Context) error {
	if c.opt.Store == nil {
		return nil
	}
	c.flushMetrics() // the metrics up to the checkpoint are on disk before it is
	c.st.Pos = c.core.Position()
	ck, err := c.st.Checkpoint()
	if err != nil {
		return err
	}
	if err := c.ownsStore(ctx); err != nil {
		return err
	}
	if err := c.opt.Store.Save(context.WithoutCancel(ctx), ck); err != nil { // a save is finished even when interrupted
		return err
	}
	c.gauges.checkpoints.Add(1)
	c.log.Info("checkpoint saved", "name", ck.Name, "run", ck.Run, "store", c.opt.Store.String(), "epoch", ck.Epoch, "step", ck.Step)
	if keep := c.st.Config.KeepLast; keep > 0 {
		// Prune counts only valid checkpoints; its error also reports the
		// damaged ones it kept.
		removed, err := c.opt.Store.Prune(context.WithoutCancel(ctx), keep)
		if len(removed) > 0 {
			c.log.Info("old checkpoints removed", "names", removed)
		}
		if err != nil {
			c.log.Warn("prune checkpoints", "err", err)
		}
	}
	return nil
}

// ownsStore checks, before a save, that no other run writes to the store:
// a checkpoint there of another run (two coordinators started on one
// store) is an error naming both runs, and training stops rather than mix
// them. A checkpoint without a run (saved by an older tinct) is no other
// run's. A store that cannot be listed is logged, and the save goes ahead
// (the next one checks again).
func (c *Coordinator) ownsStore(ctx context.Context) error {
	infos, err := c.opt.Store.List(context.WithoutCancel(ctx))
	if err != nil {
		c.log.Warn("could not list the checkpoint store to check that no other run writes to it; saving anyway", "store", c.opt.Store.String(), "err", err)
		return nil
	}
	for _, in := range infos {
		if in.Run != "" && in.Run != c.st.Run {
			return fmt.Errorf("checkpoint store %s holds %s (step %d, epoch %d, saved %s) of run %s, but this is run %s: another run is writing to the same store (two trainings started on one store?); this run stops without saving so that the two never mix. Give each run a store of its own (or, if run %s is over and unwanted, delete its checkpoints from the store and resume this one)",
				c.opt.Store, in.Name, in.Step, in.Epoch, in.Time.Format(time.RFC3339), in.Run, c.st.Run, in.Run)
		}
	}
	return nil
}

func (c *Coordinator) scalar(tag string, step int64, v float64) {
	if c.opt.Track == nil {
		return
	}
	if err := c.opt.Track.Scalar(tag, step, v); err != nil {
		c.log.Warn("metrics", "err", err)
	}
}

// sampleGrid colorizes the first sample_images validation images with the
// EMA network and records rows gray / generated / ground truth (colorize.Grid;
// generated keeps the gray image's own luminance unless sample_color is raw).
func (c *Coordinator) sampleGrid(ctx context.Context, epoch int) error {
	cfg := c.st.Config
	k := min(cfg.SampleImages, c.opt.Val.Len())
	if k == 0 {
		return nil
	}
	grid, err := colorize.Grid(ctx, c.st.EMA, c.opt.Val, k, cfg.SampleSteps, cfg.SampleClip, cfg.SampleColor == config.SampleRaw, rngs.SampleGrid(cfg.Seed))
	if err != nil {
		return err
	}
	return c.opt.Track.Image("samples", int64(epoch), grid)
}

// Resume restores the newest valid checkpoint of store into st, and with it
// the run id of the newest checkpoint's run (store.Latest never falls back
// to another run's checkpoint; those it skips are logged). It reports
// false, with no error, only when the store is empty (checkpoint.ErrEmpty);
// a store whose checkpoints are all damaged, or whose latest pointer names
// a checkpoint that is gone, is an error naming the store and each problem,
// never a fresh start. Damaged checkpoints skipped on the way to a valid one
// are logged.
func Resume(ctx context.Context, store checkpoint.Store, st *trainstate.State, log *slog.Logger) (bool, error) {
	ck, warns, err := store.Latest(ctx)
	if errors.Is(err, checkpoint.ErrEmpty) {
		return false, nil
	}
	if err != nil {
		return false, err // a NoValidError names the store and every problem
	}
	for _, w := range warns {
		log.Warn("checkpoint skipped", "err", w)
	}
	if err := st.Restore(ck, log); err != nil {
		return false, fmt.Errorf("resume from %s: %w", ck.Name, err)
	}
	log.Info("resumed", "checkpoint", ck.Name, "run", st.Run, "epoch", st.Pos.Epoch, "step", st.Pos.Step)
	return true, nil
}
