package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/track"
	"github.com/tinct/tinct/trainstate"
	"github.com/tinct/tinct/worker"
)

func newTrainCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "train [key=value ...]",
		Short: "Train on one machine (a coordinator with one in-process worker)",
		Long: `Trains the colorizer with the configuration in configs/config.yaml (built in),
or --config FILE over it, and key=value overrides, dotted for nested keys:

  tinct train lr=0.0001 batch_size=64 ema.decay=0.9995
  tinct train --config configs/sample.yaml epochs=10

Each run writes outputs/<timestamp>/ (output_dir): the resolved config.yaml,
metrics.jsonl, TensorBoard event files, sample grids (rows: gray, generated,
ground truth) and colorized.png at the end. Checkpoints go to the store every
checkpoint_every epochs, at the end, and on SIGINT/SIGTERM (then tinct exits
0); resume=true continues from the newest valid one, exactly where it was
(no valid checkpoint is an error), and resume=auto does so when the store
holds one and starts afresh when it is empty. A store holds one run: each
checkpoint carries its run's id, a resume continues the run of the newest
checkpoint (never another run's), and resume=false (the default) into a
store that holds checkpoints stops with an error unless
overwrite_store=true, which deletes them first and starts a new run there.
When dataset names a folder of images instead of a prepared set, it is
prepared on first use (see tinct data prepare).

The main keys: dataset, image_size, batch_size, epochs, lr, store, resume,
overwrite_store, checkpoint_every, sample_every, output_dir, model.widths,
ema.decay, val_images, test_images, seed. Every key with its default and
meaning: tinct config show; what a run would use: tinct config show
[key=value ...].`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(file, args)
			if err != nil {
				return err
			}
			return train(cmd.Context(), cmd, cfg)
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "configuration file over the built-in defaults (e.g. configs/sample.yaml)")
	return cmd
}

func train(ctx context.Context, cmd *cobra.Command, cfg *config.Config) error {
	// device=cuda:N: the GPU is opened first, so that a missing one stops
	// the run before it makes anything
	var g *gpu
	if n, ok := cfg.CUDAOrdinal(); ok {
		var err error
		if g, err = openGPU("device="+cfg.Device, n, cfg.Precision); err != nil {
			return err
		}
		defer g.close()
	}
	r, err := startRun(ctx, cmd, cfg)
	if err != nil {
		return err
	}
	defer r.close()
	st := r.st
	be, err := g.backend() // the replica's: the GPU, or $TINCT_BACKEND's device
	if err != nil {
		return err
	}
	w, err := worker.NewOn("local", be, cfg.ModelConfig(), r.train)
	if err != nil {
		return err
	}
	defer w.Close()
	co, err := coordinator.New(r.options(coordinator.NewLocal(&worker.Member{W: w, Log: slog.Default()})))
	if err != nil {
		return err
	}
	slog.Info("training", "images", r.train.Len(), "batch", cfg.BatchSize, "steps_per_epoch", co.StepsPerEpoch(), "epochs", cfg.Epochs, "from_epoch", co.Epoch()+1)
	if done, err := runUntilDone(ctx, co); !done || err != nil {
		return err
	}
	if err := colorizeExample(ctx, st.EMA, cfg, r.dataDir, r.dir); err != nil {
		return err
	}
	r.summary(cmd.ErrOrStderr(), co, "the same tinct train command with resume=true and a larger epochs=")
	return nil
}

// summary ends a finished run with what it made and what to do next; more
// says how to train more epochs.
func (r *runParts) summary(w io.Writer, co *coordinator.Coordinator, more string) {
	store := r.st.Config.Store
	fmt.Fprintf(w, `
training finished: %d epochs, %d steps, last epoch's mean loss %.4f
  run folder   %s (config.yaml, metrics.jsonl, TensorBoard events, images/, colorized.png)
  checkpoints  %s
next:
  tinct colorize PHOTO.jpg --checkpoint %s
  tinct serve --store %s    (the web app, http://127.0.0.1:7860)
  more epochs: %s
`, co.Epoch(), co.Step(), co.EpochLoss(), r.dir, store, store, store, more)
}

// runUntilDone trains until the last epoch, or until SIGINT/SIGTERM, when
// the coordinator has saved a checkpoint: then it reports done=false and no
// error (the process exits 0; resume=true continues).
func runUntilDone(ctx context.Context, co *coordinator.Coordinator) (done bool, err error) {
	sctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = co.Run(sctx)
	if errors.Is(err, coordinator.ErrInterrupted) {
		slog.Info(err.Error())
		return false, nil
	}
	return err == nil, err
}

// newRunDir creates output_dir/<timestamp>/, with a suffix when a run
// started in the same second.
func newRunDir(base string) (string, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	stamp := filepath.Join(base, time.Now().Format("2006-01-02_15-04-05"))
	dir := stamp
	for i := 1; ; i++ {
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			return dir, nil
		}
		if !os.IsExist(err) {
			return "", err
		}
		dir = fmt.Sprintf("%s_%d", stamp, i)
	}
}

// runParts is what tinct train and tinct coordinator start set up around the
// coordinator: the run directory with the resolved config, the prepared
// data, the checkpoint store, the state to start from, the metrics writer
// and the Prometheus server.
type runParts struct {
	dir, dataDir string
	st           *trainstate.State
	saved        bool // st is the store's newest checkpoint
	// replace are the checkpoints of earlier runs that overwrite_store=true
	// deletes before this new run starts
	replace []checkpoint.Info
	train   *dataset.Set
	val     dataset.Examples
	store   checkpoint.Store
	track   *track.Writer
	metrics *track.Registry
	closers []func()
}

func startRun(ctx context.Context, cmd *cobra.Command, cfg *config.Config) (_ *runParts, err error) {
	if err := useCompute(cmd, cfg); err != nil {
		return nil, err
	}
	r := &runParts{}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	// everything that can be refused is checked before the run directory
	// is made, so a refused run leaves nothing behind; the store first,
	// as it answers at once
	if r.store, err = checkpoint.Open(cfg.Store); err != nil {
		return nil, err
	}
	if r.st, r.saved, r.replace, err = initialState(ctx, cfg, r.store); err != nil {
		return nil, err
	}
	if r.dataDir, err = preparedData(ctx, cfg); err != nil {
		return nil, err
	}
	if r.train, err = dataset.Open(r.dataDir, "train"); err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { r.train.Close() })
	// the validation split gives the sample grids: a damaged one stops a
	// run that asks for them, and is named either way
	vs, err := dataset.Open(r.dataDir, "val")
	switch {
	case err != nil && cfg.SampleEvery > 0:
		return nil, fmt.Errorf("validation split (sample grids every %d epochs; sample_every=0 trains without them): %w", cfg.SampleEvery, err)
	case err != nil:
		slog.Warn("validation split unreadable; not needed with sample_every=0", "err", err)
	case vs.Len() == 0:
		vs.Close()
		slog.Warn("no validation images: sample grids are skipped", "dataset", r.dataDir)
	default:
		r.closers = append(r.closers, func() { vs.Close() })
		r.val = vs
	}
	if r.dir, err = newRunDir(cfg.OutputDir); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.dir, "config.yaml"), cfg.YAML(), 0o644); err != nil {
		return nil, err
	}
	slog.Info("run", "dir", r.dir, "run", r.st.Run, "store", r.store.String())
	if r.track, err = track.Open(r.dir); err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { r.track.Close() })
	if cfg.MetricsAddr != "" {
		r.metrics = track.NewRegistry()
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return nil, fmt.Errorf("metrics_addr=%s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", r.metrics)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		r.closers = append(r.closers, func() { srv.Close() })
		slog.Info("prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	// overwrite_store=true: the old run's checkpoints go last, once
	// nothing else can refuse the run
	if err := clearStore(ctx, r.store, r.replace); err != nil {
		return nil, err
	}
	return r, nil
}

// close releases what startRun opened, last opened first.
func (r *runParts) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// options are the coordinator's parts for this run.
func (r *runParts) options(tr coordinator.Transport) coordinator.Options {
	return coordinator.Options{State: r.st, Saved: r.saved, Train: r.train, Val: r.val, Transport: tr, Store: r.store, Track: r.track, Progress: os.Stderr, Metrics: r.metrics}
}

// initialState is the state to train from: the seed's, as a new run, or
// with resume=true or auto the newest valid checkpoint's (saved: it is in
// the store already), which continues that checkpoint's run. Only
// resume=auto over an empty store starts afresh: resume=true over an empty
// store (a typo in store, most likely) and any resume over a store of
// damaged checkpoints stop with an error, since training afresh would then
// overwrite or prune those checkpoints. A store belongs to one run:
// resume=false over a store that holds checkpoints stops with an error
// naming them, unless overwrite_store=true, when replace lists the
// checkpoints to delete (clearStore) before the new run starts.
func initialState(ctx context.Context, cfg *config.Config, store checkpoint.Store) (st *trainstate.State, saved bool, replace []checkpoint.Info, err error) {
	if st, err = trainstate.New(cfg); err != nil {
		return nil, false, nil, err
	}
	if cfg.Resume == config.ResumeNo {
		infos, err := store.List(ctx)
		if err != nil {
			return nil, false, nil, fmt.Errorf("resume=false: cannot tell whether %s holds another run's checkpoints: %w", store, err)
		}
		if len(infos) > 0 && !cfg.OverwriteStore {
			return nil, false, nil, storeInUse(store, infos)
		}
		slog.Info("starting a new run", "run", st.Run, "store", store.String())
		return st, false, infos, nil
	}
	ok, err := coordinator.Resume(ctx, store, st, slog.Default())
	switch {
	case err != nil:
		return nil, false, nil, fmt.Errorf("resume=%s: %w\n(move the damaged checkpoints away or repair them, or give another store; resume=false overwrite_store=true would delete them all and train afresh)", cfg.Resume, err)
	case ok:
		return st, true, nil, nil
	case cfg.Resume == config.ResumeYes:
		return nil, false, nil, fmt.Errorf("resume=true: %s holds no checkpoint (store=%s); check the path, or use resume=auto to start afresh when the store is empty", store, cfg.Store)
	}
	slog.Info("resume=auto: the store holds no checkpoint; starting afresh", "store", store.String(), "run", st.Run)
	return st, false, nil, nil
}

// storeInUse is the error of resume=false over a store that holds the
// checkpoints infos (newest first): it names the store, their runs and the
// newest, and the two ways on.
func storeInUse(store checkpoint.Store, infos []checkpoint.Info) error {
	var runs []string
	seen := map[string]bool{}
	for _, in := range infos {
		if !seen[in.Run] {
			seen[in.Run] = true
			runs = append(runs, checkpoint.RunLabel(in.Run))
		}
	}
	n := infos[0]
	of := "run "
	if len(runs) > 1 {
		of = "runs "
	}
	return fmt.Errorf(`resume=false: %s already holds %d checkpoint(s) of %s; the newest is %s (step %d, epoch %d, saved %s).
A new run there would write over and mix with them. Either
  resume=true           continues run %s from its newest valid checkpoint, or
  overwrite_store=true  (with resume=false) starts a new run there on purpose, deleting those %d checkpoint(s) first,
or give another store=`,
		store, len(infos), of+strings.Join(runs, ", "), n.Name, n.Step, n.Epoch, n.Time.Local().Format(time.RFC3339),
		checkpoint.RunLabel(n.Run), len(infos))
}

// clearStore deletes the checkpoints of earlier runs that
// overwrite_store=true replaces, logging each, so that the store holds
// only the new run's.
func clearStore(ctx context.Context, store checkpoint.Store, infos []checkpoint.Info) error {
	for _, in := range infos {
		if err := store.Delete(ctx, in.Name); err != nil {
			return fmt.Errorf("overwrite_store=true: %w", err)
		}
		slog.Warn("overwrite_store=true: deleted a checkpoint of an earlier run", "store", store.String(), "name", in.Name,
			"run", in.Run, "step", in.Step, "epoch", in.Epoch)
	}
	return nil
}

// useCompute applies the config's gemm and threads unless the command line
// chose them.
func useCompute(cmd *cobra.Command, cfg *config.Config) error {
	if cfg.Threads > 0 && !cmd.Flags().Changed("threads") {
		nn.SetWorkers(cfg.Threads)
	}
	if cfg.GEMM != "auto" && !cmd.Flags().Changed("gemm") {
		b, err := nn.UseGEMM(cfg.GEMM)
		if err != nil {
			return err
		}
		slog.Info("gemm backend (from config)", "backend", b.Name())
	}
	return nil
}

// preparedData returns cfg.Dataset when it is a prepared set, fetches it
// into output_dir/datasets/ when it is in an object store (s3://bucket/prefix,
// reached as the checkpoint store is: TINCT_S3_ENDPOINT, TINCT_S3_INSECURE,
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; verified shards already there are
// reused), or prepares the folder of images it names into
// output_dir/prepared/ once.
func preparedData(ctx context.Context, cfg *config.Config) (string, error) {
	if dataset.IsRemote(cfg.Dataset) {
		st, err := dataset.Fetch(ctx, cfg.Dataset, filepath.Join(cfg.OutputDir, "datasets"), checkpoint.EnvOptions())
		if err != nil {
			return "", err
		}
		slog.Info("dataset fetched", "from", cfg.Dataset, "dir", st.Dir, "downloaded", st.Downloaded, "cached", st.Cached, "bytes", st.Bytes)
		return st.Dir, nil
	}
	if _, err := os.Stat(filepath.Join(cfg.Dataset, "manifest.json")); err == nil {
		return cfg.Dataset, nil
	}
	st, err := os.Stat(cfg.Dataset)
	if err != nil {
		return "", fmt.Errorf("dataset %s: %w (give a prepared dataset or a folder of images)", cfg.Dataset, err)
	}
	abs, _ := filepath.Abs(cfg.Dataset)
	key := fmt.Sprintf("%s|%d|%d|%d|%d|%d", abs, st.ModTime().UnixNano(), cfg.ImageSize, cfg.ValImages, cfg.TestImages, cfg.Seed)
	if cfg.Crops > 1 {
		key += fmt.Sprintf("|crops%d", cfg.Crops) // the key of a one-crop set is unchanged
	}
	sum := sha256.Sum256([]byte(key))
	out := filepath.Join(cfg.OutputDir, "prepared", fmt.Sprintf("%s-%d-%x", filepath.Base(abs), cfg.ImageSize, sum[:6]))
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err == nil {
		slog.Info("dataset already prepared", "dir", out)
		return out, nil
	}
	slog.Info("preparing dataset", "source", cfg.Dataset, "out", out, "image_size", cfg.ImageSize)
	_, statErr := os.Stat(out)
	summary, err := dataset.Prepare(ctx, dataset.PrepareOptions{Source: cfg.Dataset, Format: "auto", Out: out, ImageSize: cfg.ImageSize, Val: cfg.ValImages, Test: cfg.TestImages, Seed: cfg.Seed, Crops: cfg.Crops, Progress: prepareProgress(os.Stderr)})
	if err != nil {
		if os.IsNotExist(statErr) {
			// no half-prepared set left behind, nor the folders made for it
			// (Remove leaves a folder that holds anything else)
			os.RemoveAll(out)
			os.Remove(filepath.Dir(out))
			os.Remove(cfg.OutputDir)
		}
		var few *dataset.TooFewError
		if errors.As(err, &few) {
			return "", fmt.Errorf("dataset %s has %d usable images, but val_images=%d + test_images=%d leave none for training: lower them (e.g. tinct train val_images=8 test_images=8 …), or start with the bundled photos: tinct train --config configs/sample.yaml", cfg.Dataset, few.Usable, few.Val, few.Test)
		}
		return "", err
	}
	slog.Info("dataset prepared", "train", summary.Train, "val", summary.Val, "test", summary.Test, "skipped", summary.Reasons(), "ignored", summary.Ignored)
	logSkips(slog.Default(), summary)
	return out, nil
}

// colorizeExample writes colorized.png in the run directory: the first test
// (or validation) image as gray, colorized and true.
func colorizeExample(ctx context.Context, ema *model.UNet, cfg *config.Config, dataDir, runDir string) error {
	var set *dataset.Set
	for _, split := range []string{"test", "val", "train"} {
		s, err := dataset.Open(dataDir, split)
		if err != nil {
			slog.Warn("example colorization: split unreadable", "split", split, "err", err)
			continue
		}
		if s.Len() > 0 {
			set = s
			break
		}
		s.Close()
	}
	if set == nil {
		return nil
	}
	defer set.Close()
	grid, err := colorize.Grid(ctx, ema, set, 1, cfg.SampleSteps, cfg.SampleClip, cfg.SampleColor == config.SampleRaw, rngs.Sampler(cfg.Seed))
	if err != nil {
		return err
	}
	path := filepath.Join(runDir, "colorized.png")
	if err := track.SavePNG(path, grid); err != nil {
		return err
	}
	slog.Info("colorized example (gray, generated, truth)", "file", path)
	return nil
}
