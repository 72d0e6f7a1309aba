// Command tinct trains and serves a diffusion model that colorizes
// grayscale photographs. See README.md.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/worker"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tinct:", err)
		os.Exit(exitCode(err))
	}
}

// exitRefused is the exit status of a worker refused for a reason that
// will not change (worker.Refused): a supervisor should not start it
// again as it is. Any other error exits 1.
const exitRefused = 3

func exitCode(err error) int {
	if worker.Refused(err) {
		return exitRefused
	}
	return 1
}

type globalFlags struct {
	gemm       string
	threads    int
	verbose    bool
	cpuprofile string
	logFormat  string
}

func newRoot() *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:   "tinct",
		Short: "Train and serve a diffusion model that colorizes grayscale photographs",
		Long: `tinct trains a conditional DDIM U-Net that predicts the noise added to a
colour image given its grayscale version, and samples colourisations of gray
photographs with it. One binary does it all: prepare data (tinct data),
train on one machine (tinct train) or on a cluster (tinct coordinator start,
tinct worker join), colorize and score (tinct colorize, tinct eval), serve
the web app (tinct serve), and check the numerics and speed (tinct model,
tinct bench).

Start with: tinct train --config configs/sample.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelInfo
			if g.verbose {
				level = slog.LevelDebug
			}
			if err := setupLogging(g.logFormat, level); err != nil {
				return err
			}
			if g.threads > 0 {
				nn.SetWorkers(g.threads)
			}
			b, err := nn.UseGEMM(g.gemm)
			if err != nil {
				return err
			}
			be, err := nn.NewCompute("")
			if be == nil { // an unknown $TINCT_BACKEND
				return err
			}
			compute := be.Name()
			if g.cpuprofile != "" {
				f, err := os.Create(g.cpuprofile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
			}
			logf := slog.Debug
			if computes(cmd) {
				logf = slog.Info
			}
			logf("backends", "compute", compute, "gemm", b.Name(), "workers", nn.Workers())
			return nil
		},
	}
	defGemm := os.Getenv("TINCT_GEMM")
	if defGemm == "" {
		defGemm = "auto"
	}
	root.PersistentFlags().StringVar(&g.gemm, "gemm", defGemm, "GEMM library: auto (the fastest that loads: oneDNN, then OpenBLAS, then pure Go), onednn, openblas or go; default from $TINCT_GEMM")
	root.PersistentFlags().IntVar(&g.threads, "threads", 0, "worker goroutines for the kernels (default: all CPUs)")
	root.PersistentPostRun = func(*cobra.Command, []string) { pprof.StopCPUProfile() }
	root.PersistentFlags().StringVar(&g.cpuprofile, "cpuprofile", "", "write a CPU profile to this file")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "debug logging")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "auto", "log lines: auto (short lines on a terminal, key=value otherwise), text (key=value) or json")
	root.AddCommand(newVersionCmd(), newModelCmd(), newBenchCmd(), newTrainCmd(), newDataCmd(), newColorizeCmd(), newEvalCmd(), newServeCmd(),
		newCoordinatorCmd(), newWorkerCmd(), newClusterCmd(), newConfigCmd(), newCUDACmd())
	root.AddCommand(newSimCmd())
	return root
}

// computes reports whether cmd runs the network (and so says which GEMM
// backend it runs on).
func computes(cmd *cobra.Command) bool {
	switch cmd.Name() {
	case "train", "start", "join", "colorize", "eval", "serve", "forward":
		return true
	}
	return cmd.Parent() != nil && cmd.Parent().Name() == "bench"
}
