package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
	"github.com/tinct/tinct/worker"
)

type benchFlags struct {
	nf    netFlags
	gf    gpuFlags
	size  int
	batch int
	reps  int
	seed  uint64
}

func (b *benchFlags) register(cmd *cobra.Command, batch, reps int, repsName string) {
	b.nf.register(cmd)
	cmd.Flags().IntVar(&b.size, "size", 128, "image height and width")
	cmd.Flags().IntVar(&b.batch, "batch", batch, "images per batch")
	cmd.Flags().IntVar(&b.reps, repsName, reps, "timed repetitions (after one warm-up)")
	cmd.Flags().Uint64Var(&b.seed, "seed", 1, "random seed")
	b.gf.register(cmd, "run the network")
}

func (b *benchFlags) net() (*model.UNet, *rand.Rand, error) {
	if b.reps < 1 || b.batch < 1 {
		return nil, nil, fmt.Errorf("batch and repetitions must be at least 1")
	}
	cfg, err := b.nf.config()
	if err != nil {
		return nil, nil, err
	}
	net, err := model.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	rng := rand.New(rand.NewPCG(b.seed, 0))
	net.Init(rng)
	return net, rng, nil
}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure training steps, network calls and colourisations",
		Long: `Each subcommand warms up once, times repetitions, prints one line per
repetition and, as its last line, the median: ms_per_step=, ms_per_call= or
ms_per_image=. bench/compare.py runs them beside the PyTorch reference.`,
	}
	cmd.AddCommand(newBenchTrainCmd(), newBenchForwardCmd(), newBenchColorizeCmd(), newBenchClusterCmd())
	return cmd
}

func newBenchTrainCmd() *cobra.Command {
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Time full training steps (data, forward, backward, Adam, EMA, checksum)",
		Long: `Times the step single-machine training runs: the in-process worker's
Member.Step (load the batch, draw the noise, forward, loss, backward, apply
to its replica — Adam, BatchNorm buffers, EMA —, checksum) and, every
snapshot_every steps (the default configuration's), the coordinator loading
the replica's snapshot and checking its checksum, on random images held in
memory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			net, rng, err := b.net()
			if err != nil {
				return err
			}
			cfg, err := config.Parse(nil, []string{"lr=0.0002", "ema.decay=0.999", fmt.Sprintf("seed=%d", b.seed), fmt.Sprintf("image_size=%d", b.size),
				fmt.Sprintf("batch_size=%d", b.batch), "model.widths=" + strings.ReplaceAll(fmt.Sprint(net.Config.Widths), " ", ","), fmt.Sprintf("model.block_depth=%d", net.Config.BlockDepth)})
			if err != nil {
				return err
			}
			st, err := trainstate.New(cfg)
			if err != nil {
				return err
			}
			x0, gray := randomImages(rng, b.batch, b.size)
			g, err := b.gf.open()
			if err != nil {
				return err
			}
			defer g.close()
			be, err := g.backend()
			if err != nil {
				return err
			}
			w, err := worker.NewOn("bench", be, cfg.ModelConfig(), memExamples{x0, gray})
			if err != nil {
				return err
			}
			defer w.Close()
			m := &worker.Member{W: w}
			if _, err := m.Setup(1, 0, 1, st.Replica()); err != nil {
				return err
			}
			task := &control.Task{Gen: 1, Batch: b.batch, Seed: b.seed}
			for i := range b.batch {
				task.Indices = append(task.Indices, i)
			}
			flops := 3 * 2 * float64(net.MACs(b.size, b.size)) * float64(b.batch)
			var stepErr error
			tracked0 := st.Net.BatchesTracked()
			// the step of single-machine training: the member's step, and
			// every snapshot_every steps the coordinator loading its state
			err = timeIt(cmd.OutOrStdout(), "ms_per_step", b.reps, flops, func() {
				snap := (task.Step+1)%int64(cfg.SnapshotEvery) == 0
				task.Snapshot, task.SendState = snap, snap
				rep := m.Step(cmd.Context(), task, tracked0+task.Step+1)
				if rep.Err != "" {
					stepErr = errors.New(rep.Err)
					return
				}
				if snap {
					if err := st.LoadReplica(rep.State.(trainstate.Replica)); err != nil {
						stepErr = err
						return
					}
					if !bytes.Equal(st.Checksum(), rep.Checksum) {
						stepErr = errors.New("replica and committed state differ")
					}
				}
				task.Step++
			})
			return errors.Join(err, stepErr)
		},
	}
	b.register(cmd, 8, 5, "steps")
	return cmd
}

func newBenchForwardCmd() *cobra.Command {
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "forward",
		Short: "Time one eval-mode network call",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			net, rng, err := b.net()
			if err != nil {
				return err
			}
			net, release, err := b.gf.network(net)
			if err != nil {
				return err
			}
			defer release()
			ar, err := net.NewArena(b.batch, b.size, b.size)
			if err != nil {
				return err
			}
			x := nn.NewTensor(b.batch, 4, b.size, b.size)
			for i := range x.Data {
				x.Data[i] = float32(rng.NormFloat64())
			}
			nv := make([]float32, b.batch)
			for i := range nv {
				nv[i] = rng.Float32()
			}
			flops := 2 * float64(net.MACs(b.size, b.size)) * float64(b.batch)
			out := make([]float32, b.batch*3*b.size*b.size)
			err = timeIt(cmd.OutOrStdout(), "ms_per_call", b.reps, flops, func() {
				y := net.Forward(ar, x, nv, false)
				if net.OnDevice() { // the result on the host, as a sampler reads it
					net.Compute().Download(out, y.Flat())
				}
			})
			return errors.Join(err, net.Err())
		},
	}
	b.register(cmd, 1, 10, "calls")
	return cmd
}

func newBenchColorizeCmd() *cobra.Command {
	var b benchFlags
	var steps, samples int
	cmd := &cobra.Command{
		Use:   "colorize",
		Short: "Time a full DDIM colourisation of one gray image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b.batch = samples
			net, rng, err := b.net()
			if err != nil {
				return err
			}
			net, release, err := b.gf.network(net)
			if err != nil {
				return err
			}
			defer release()
			pipe, err := colorize.New(net, b.size, samples, false)
			if err != nil {
				return err
			}
			defer pipe.Close()
			_, gray := randomImages(rng, 1, b.size)
			flops := 2 * float64(net.MACs(b.size, b.size)) * float64(samples*steps)
			return timeIt(cmd.OutOrStdout(), "ms_per_image", b.reps, flops, func() {
				if _, err := pipe.Images(context.Background(), gray, samples, steps, rng, nil); err != nil {
					panic(err)
				}
			})
		},
	}
	b.nf.register(cmd)
	cmd.Flags().IntVar(&b.size, "size", 128, "image height and width")
	cmd.Flags().IntVar(&steps, "steps", 20, "DDIM steps")
	cmd.Flags().IntVar(&samples, "samples", 1, "colourisations of the image, sampled as one batch")
	cmd.Flags().IntVar(&b.reps, "images", 3, "timed colourisations (after one warm-up)")
	cmd.Flags().Uint64Var(&b.seed, "seed", 1, "random seed")
	b.gf.register(cmd, "run the network")
	return cmd
}

// memExamples serves a batch held in memory as training examples.
type memExamples struct{ x0, gray nn.Tensor }

func (m memExamples) Len() int       { return m.x0.N }
func (m memExamples) ImageSize() int { return m.x0.H }
func (m memExamples) Load(i int, color, gray []float32, flip bool) error {
	copy(color, m.x0.Image(i))
	copy(gray, m.gray.Image(i))
	return nil
}

// randomImages returns a smooth random colour batch in [−1,1] and its gray.
func randomImages(rng *rand.Rand, n, size int) (x0, gray nn.Tensor) {
	x0 = nn.NewTensor(n, 3, size, size)
	gray = nn.NewTensor(n, 1, size, size)
	for i := range x0.Data {
		x0.Data[i] = 2*rng.Float32() - 1
	}
	for b := range n {
		img, g := x0.Image(b), gray.Image(b)
		hw := size * size
		for i := range g {
			g[i] = 0.299*img[i] + 0.587*img[hw+i] + 0.114*img[2*hw+i]
		}
	}
	return x0, gray
}

// timeIt runs fn once to warm up, then reps times, and prints each time, the
// throughput, the peak RSS and finally the median as key=value.
func timeIt(w io.Writer, key string, reps int, flops float64, fn func()) error {
	fn()
	var ms []float64
	for i := range reps {
		start := time.Now()
		fn()
		d := time.Since(start)
		ms = append(ms, float64(d.Microseconds())/1000)
		fmt.Fprintf(w, "rep %d: %.1f ms (%.1f GFLOP/s)\n", i+1, ms[i], flops/d.Seconds()/1e9)
	}
	slices.Sort(ms)
	med := ms[len(ms)/2]
	if len(ms)%2 == 0 {
		med = (ms[len(ms)/2-1] + ms[len(ms)/2]) / 2
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		fmt.Fprintf(w, "peak_rss_mib=%.0f\n", float64(ru.Maxrss)/1024)
	}
	fmt.Fprintf(w, "%s=%.1f\n", key, med)
	return nil
}
