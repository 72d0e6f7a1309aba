package main

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/sim"
)

type simFlags struct {
	workers, gbits, tflops []string
	protocols              []string
	sections               []string
	imageSize, batch       int
	latency, overhead      time.Duration
	streamGbits, coordGbit float64
	commit, apply, hostImg time.Duration
	load, coordMsg         time.Duration
	snapLoad               time.Duration
	copyGBs, hashGBs       float64
	window, snapshotEvery  int
	chunk, bucket          int
	jitter                 float64
	seed                   uint64
	warmup, steps          int

	stepTimeout, setupTimeout, ringTimeout time.Duration

	faultWorkers          int
	faultGbits, faultTF   float64
	faultEvery, faultSpan time.Duration
	faultFirst            time.Duration
	faultPhases           int
	faultModes            []string
	rejoin                time.Duration

	whatIfWorkers      int
	whatIfGbits, wifTF float64

	scale, scaling string
	scaleProtocol  string
	parallel       int
}

func newSimCmd() *cobra.Command {
	var f simFlags
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a large training cluster in simulated time (throughput, GPU busy, faults)",
		Long: `sim drives the real control core (the coordinator's decisions) with a
simulated cluster in simulated time: workers whose forward and backward take
the network's FLOP count over a FLOP rate, ring all-reduces over modelled
links (bandwidth, latency, per-message overhead, 256 KiB chunks, buckets
overlapped with backward as the worker does), rank 0's uploads, the
coordinator's commits, and workers that die. It prints markdown tables:

  calibration  the model against real runs of 1–4 workers on this machine
               (bench/scale.json, from bench/scale.sh: the protocol before
               the pipelined one, so simulated as "before"), with the error
  grid         images/s, each GPU's busy fraction and the step's breakdown
               for N workers × link × FLOP rate, under each protocol
  faults       the throughput lost when a worker dies every --fault-every
  whatif       at the target (N=64, 10 Gbit/s) what each remaining cost
               of a step is worth (MODELS of changes not made)

Protocols, both driving the same real core:
  pipelined  the built one: --window steps in flight beyond the last agreed
             (steps_in_flight), a snapshot of rank 0's whole state every
             --snapshot-every steps (snapshot_every), loaded by the
             coordinator off the workers' path
  before     the protocol built until the pipelined one: the core's
             window 1 / snapshot every step cadence with the old costs (rank
             0 uploads the 7.8 MB update every step, the coordinator applies
             it in --commit before the next step's tasks go out)
docs/sim.md explains the model, which numbers are measured and which are
guesses.

Times in the tables are simulated; the whole default run takes a few seconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSim(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.sections, "sections", []string{"calibration", "grid", "faults", "whatif"}, "what to run: calibration, grid, faults, whatif")
	fl.StringSliceVar(&f.workers, "workers", []string{"8", "16", "64", "256"}, "grid: worker counts")
	fl.StringSliceVar(&f.gbits, "gbps", []string{"1", "10", "100"}, "grid: link bandwidths, Gbit/s")
	fl.StringSliceVar(&f.tflops, "tflops", []string{"20", "60"}, "grid: sustained FLOP rates of one GPU's forward and backward, TFLOP/s")
	fl.StringSliceVar(&f.protocols, "protocol", []string{"before", "pipelined"}, "protocols: pipelined (built), before (the protocol built until it)")
	fl.IntVar(&f.window, "window", sim.DefaultWindow, "pipelined: steps in flight beyond the last agreed one (steps_in_flight)")
	fl.IntVar(&f.snapshotEvery, "snapshot-every", sim.DefaultSnapshotEvery, "pipelined: steps between snapshots (snapshot_every)")
	fl.IntVar(&f.imageSize, "image-size", 128, "image side")
	fl.IntVar(&f.batch, "batch", 32, "images per GPU per step")
	d := sim.Defaults()
	fl.DurationVar(&f.latency, "latency", d.Link.Latency, "one hop's one-way delay, software included (≈ the ~108 µs per ring hop measured on loopback here, BenchmarkRingHop; a guess for a real network)")
	fl.DurationVar(&f.overhead, "overhead", d.Link.Overhead, "the sender's fixed cost per message (ring chunk, report, task), occupying its stream (guess)")
	fl.Float64Var(&f.streamGbits, "stream-gbps", d.Link.StreamRate*8/1e9, "cap of one stream's throughput whatever the link, Gbit/s: the hosts' per-byte work (guess; 0: none)")
	fl.Float64Var(&f.coordGbit, "coord-gbps", 0, "the coordinator's link, Gbit/s (0: as the workers')")
	fl.DurationVar(&f.commit, "commit", d.Commit, "before: the coordinator's commit per step (the old BenchmarkCommit, 2M parameters)")
	fl.DurationVar(&f.snapLoad, "snapshot-load", d.SnapshotLoad, "pipelined: the coordinator's decode, load and hash of one snapshot (BenchmarkSnapshot, 31 MB)")
	fl.Float64Var(&f.copyGBs, "copy-rate", d.CopyRate/1e9, "pipelined: a worker's copy of its state out of the device, GB/s (guess)")
	fl.Float64Var(&f.hashGBs, "hash-rate", d.HashRate/1e9, "pipelined: a worker's SHA-256 of its state on the host, GB/s (BenchmarkChecksum)")
	fl.DurationVar(&f.apply, "apply", d.Apply, "a worker's apply of the update and checksum of its replica (guess for a GPU)")
	fl.DurationVar(&f.hostImg, "host-per-image", 0, "a worker's host work per image before forward (0: 450µs at 128², by pixels: BenchmarkHostPrep plus a guess for reading)")
	fl.DurationVar(&f.load, "load", d.Load, "a worker's load of the state at a ring set-up (guess)")
	fl.DurationVar(&f.coordMsg, "coord-msg", d.CoordMsg, "the coordinator's serial work per message in or out (guess)")
	fl.IntVar(&f.chunk, "chunk", d.ChunkBytes, "ring chunk, bytes (allreduce's default)")
	fl.IntVar(&f.bucket, "bucket", d.MinBucket, "smallest gradient tail reduced during backward, floats (the worker's)")
	fl.Float64Var(&f.jitter, "jitter", 0, "stragglers: each compute slowed by a factor in [1, 1+jitter], deterministic")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the jitter and of the core's permutations")
	fl.IntVar(&f.warmup, "warmup", d.Warmup, "steps committed before the measured window")
	fl.IntVar(&f.steps, "steps", d.Steps, "steps measured (grid, what-if)")
	fl.DurationVar(&f.stepTimeout, "step-timeout", d.StepTimeout, "the coordinator's --step-timeout")
	fl.DurationVar(&f.setupTimeout, "setup-timeout", d.SetupTimeout, "the coordinator's --setup-timeout")
	fl.DurationVar(&f.ringTimeout, "ring-timeout", d.RingTimeout, "the coordinator's --ring-timeout (the workers' all-reduce deadline)")
	fl.IntVar(&f.faultWorkers, "fault-workers", 256, "faults: workers")
	fl.Float64Var(&f.faultGbits, "fault-gbps", 10, "faults: link, Gbit/s")
	fl.Float64Var(&f.faultTF, "fault-tflops", 20, "faults: TFLOP/s")
	fl.DurationVar(&f.faultEvery, "fault-every", 10*time.Minute, "faults: a worker dies this often")
	fl.DurationVar(&f.faultSpan, "fault-window", 2*time.Minute, "faults: simulated time measured, holding the first death and its recovery (0: one --fault-every)")
	fl.DurationVar(&f.faultFirst, "fault-first", 0, "faults: the first death after the window's start, besides its phase's part of a snapshot period")
	fl.IntVar(&f.faultPhases, "fault-phases", 2, "faults: runs per protocol and mode, the death at the middle of each of this many equal parts of a snapshot period")
	fl.StringSliceVar(&f.faultModes, "fault-modes", []string{"kill", "crash"}, "kill (the process dies: connections reset) and/or crash (the machine is gone: memberlist finds it)")
	fl.DurationVar(&f.rejoin, "rejoin", time.Minute, "faults: a replacement joins this long after a death (negative: never; guess)")
	fl.IntVar(&f.whatIfWorkers, "whatif-workers", 64, "what-if: workers")
	fl.Float64Var(&f.whatIfGbits, "whatif-gbps", 10, "what-if: link, Gbit/s")
	fl.Float64Var(&f.wifTF, "whatif-tflops", 20, "what-if: TFLOP/s")
	fl.StringVar(&f.scale, "scale", "bench/scale.json", "calibration: the measured runs (bench/scale.sh's output)")
	fl.StringVar(&f.scaleProtocol, "scale-protocol", "before", "calibration: the protocol the --scale runs were measured with (bench/scale.json: before; pipelined: with --window and --snapshot-every)")
	fl.StringVar(&f.scaling, "scaling", "bench/scaling.json", "calibration: one process's step times (bench/scaling.sh's output), for rates independent of the cluster runs (\"\": skip)")
	fl.IntVar(&f.parallel, "parallel", 0, "simulations run at once (0: one per CPU); the results do not depend on it")
	return cmd
}

func (f *simFlags) base() (sim.Params, error) {
	p := sim.Defaults()
	p.Net = sim.Network{} // built for the image size
	p.ImageSize, p.Batch = f.imageSize, f.batch
	p.HostPerImage = f.hostImg
	p.Link.Latency, p.Link.Overhead, p.Link.StreamRate = f.latency, f.overhead, f.streamGbits*sim.Gbit
	if f.coordGbit > 0 {
		p.CoordLink = p.Link
		p.CoordLink.Bandwidth = f.coordGbit * sim.Gbit
	}
	p.Commit, p.Apply, p.Load, p.CoordMsg = f.commit, f.apply, f.load, f.coordMsg
	p.SnapshotLoad, p.CopyRate, p.HashRate = f.snapLoad, f.copyGBs*1e9, f.hashGBs*1e9
	p.Protocol = sim.Pipelined{InFlight: f.window, Every: f.snapshotEvery}
	p.ChunkBytes, p.MinBucket = f.chunk, f.bucket
	p.Jitter, p.Seed = f.jitter, f.seed
	p.Warmup, p.Steps = f.warmup, f.steps
	p.StepTimeout, p.SetupTimeout, p.RingTimeout = f.stepTimeout, f.setupTimeout, f.ringTimeout
	if f.imageSize < 8 || f.batch < 1 || f.chunk < 4 || f.bucket < 1 || f.steps < 1 || f.window < 1 || f.snapshotEvery < 1 {
		return p, fmt.Errorf("--image-size, --batch, --chunk, --bucket, --steps, --window and --snapshot-every must be positive (image size at least 8)")
	}
	if f.copyGBs <= 0 || f.hashGBs <= 0 || f.snapLoad <= 0 {
		return p, fmt.Errorf("--copy-rate, --hash-rate and --snapshot-load must be positive")
	}
	net, err := sim.DefaultNetwork(f.imageSize)
	if err != nil {
		return p, fmt.Errorf("--image-size %d: %w", f.imageSize, err)
	}
	p.Net = net
	return p, nil
}

func simProtocols(names []string, window, every int) ([]sim.Protocol, error) {
	var ps []sim.Protocol
	for _, n := range names {
		switch strings.TrimSpace(n) {
		case "before":
			ps = append(ps, sim.Before{})
		case "pipelined":
			ps = append(ps, sim.Pipelined{InFlight: window, Every: every})
		default:
			return nil, fmt.Errorf("--protocol %q: want before or pipelined", n)
		}
	}
	if len(ps) == 0 {
		return nil, errors.New("--protocol: name at least one")
	}
	return ps, nil
}

func simNumbers(flag string, ss []string) ([]float64, error) {
	var out []float64
	for _, s := range ss {
		var v float64
		if _, err := fmt.Sscan(strings.TrimSpace(s), &v); err != nil || v <= 0 {
			return nil, fmt.Errorf("--%s %q: want positive numbers", flag, s)
		}
		out = append(out, v)
	}
	return out, nil
}

func runSim(cmd *cobra.Command, f *simFlags) error {
	w := cmd.OutOrStdout()
	start := time.Now()
	base, err := f.base()
	if err != nil {
		return err
	}
	protos, err := simProtocols(f.protocols, f.window, f.snapshotEvery)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, s := range f.sections {
		switch s = strings.TrimSpace(s); s {
		case "calibration", "grid", "faults", "whatif":
			want[s] = true
		default:
			return fmt.Errorf("--sections %q: want calibration, grid, faults or whatif", s)
		}
	}
	fmt.Fprintf(w, "# tinct sim — %d² images, %d per GPU, %d-byte chunks, buckets ≥ %d floats; per hop %v latency + %v per message, streams ≤ %g Gbit/s; apply %v\n",
		f.imageSize, f.batch, f.chunk, f.bucket, f.latency, f.overhead, f.streamGbits, f.apply)
	fmt.Fprintf(w, "# pipelined (built): %d steps in flight, a snapshot every %d steps, loaded in %v; before (the protocol built until it): window 1, every step committed, commit %v\n",
		f.window, f.snapshotEvery, f.snapLoad, f.commit)
	fmt.Fprintln(w, "# all times are simulated (docs/sim.md)")
	if want["calibration"] {
		runs, err := sim.ReadMeasured(f.scale)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(w, "\n## Calibration\n\n%s not found (run from the repository root, or --scale): skipped\n", f.scale)
		case err != nil:
			return err
		default:
			machine := sim.ThisMachine()
			calProto, err := simProtocols([]string{f.scaleProtocol}, f.window, f.snapshotEvery)
			if err != nil {
				return fmt.Errorf("--scale-protocol: %w", err)
			}
			machine.Protocol = calProto[0]
			rows, err := sim.Calibrate(machine, runs)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "\n## Calibration: the compose cluster on this 2-core machine (%s) against its simulation\n\n", f.scale)
			note := ""
			if machine.Protocol.Name() == "before" {
				note = " (bench/scale.json predates the pipelined protocol)"
			}
			fmt.Fprintf(w, "Simulated with the protocol the runs were measured with: %s%s. The machine's rate is fitted to each size's one-worker run; every other row is a prediction.\n", machine.Protocol.Name(), note)
			fmt.Fprintln(w)
			sim.WriteCalibration(w, rows)
			if f.scaling != "" {
				if rates, err := sim.RatesFromScaling(f.scaling, "go"); err == nil {
					m := machine
					m.Rates = rates
					if rows, err := sim.Calibrate(m, runs); err == nil {
						all, by := sim.CalSummary(rows)
						fmt.Fprintf(w, "with the rates of %s instead (pure-Go backend, one process, not fitted):", f.scaling)
						for _, size := range []int{64, 128} {
							fmt.Fprintf(w, " %d² %.1f GFLOP/s", size, rates[size]/1e9)
						}
						fmt.Fprintf(w, "; mean |error| %.1f%%", 100*all)
						for _, n := range sim.WorkerCounts(by) {
							fmt.Fprintf(w, "; %d workers %.1f%%", n, 100*by[n])
						}
						fmt.Fprintln(w)
					}
				}
			}
		}
	}
	if want["grid"] {
		ns, err := simNumbers("workers", f.workers)
		if err != nil {
			return err
		}
		gb, err := simNumbers("gbps", f.gbits)
		if err != nil {
			return err
		}
		tf, err := simNumbers("tflops", f.tflops)
		if err != nil {
			return err
		}
		var workers []int
		for _, n := range ns {
			workers = append(workers, int(n))
		}
		rows, err := sim.Grid(base, workers, gb, tf, protos, f.parallel)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "\n## Steady state (%d steps after %d): images/s, mean GPU busy, step time in ms\n\n", f.steps, f.warmup)
		sim.WriteGrid(w, rows)
	}
	if want["faults"] && f.faultEvery > 0 {
		p := base
		p.Workers, p.FLOPS = f.faultWorkers, f.faultTF*1e12
		p.Link.Bandwidth = f.faultGbits * sim.Gbit
		if f.coordGbit == 0 {
			p.CoordLink = sim.Link{}
		}
		span := f.faultSpan
		if span == 0 {
			span = f.faultEvery
		}
		if f.faultFirst < 0 || f.faultFirst >= span || f.faultPhases < 1 {
			return fmt.Errorf("--fault-first %v: the first death must fall in the --fault-window %v; --fault-phases at least 1", f.faultFirst, span)
		}
		p.Duration = span
		p.Fault = sim.Fault{Every: f.faultEvery, First: f.faultFirst, Rejoin: f.rejoin}
		var modes []sim.FaultMode
		for _, m := range f.faultModes {
			mode, err := sim.ParseFaultMode(strings.TrimSpace(m))
			if err != nil {
				return err
			}
			modes = append(modes, mode)
		}
		rows, err := sim.Faults(p, modes, protos, f.faultPhases, f.parallel)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "\n## Faults: N=%d, %g Gbit/s, %g TFLOP/s; a worker dies every %v: windows of %v from a commit, a death %v + the middle of each of %d parts of a snapshot period into each, a replacement joining %v later\n\n",
			f.faultWorkers, f.faultGbits, f.faultTF, f.faultEvery, span, f.faultFirst, f.faultPhases, f.rejoin)
		sim.WriteFaults(w, p, rows)
		fmt.Fprintf(w, "\ncrash: memberlist declares the machine dead after %v (probe, timeout, suspicion at %d nodes)\n", p.Detect(f.faultWorkers+1).Round(time.Millisecond), f.faultWorkers+1)
	}
	if want["whatif"] {
		p := base
		p.Workers, p.FLOPS = f.whatIfWorkers, f.wifTF*1e12
		p.Link.Bandwidth = f.whatIfGbits * sim.Gbit
		if f.coordGbit == 0 {
			p.CoordLink = sim.Link{}
		}
		fmt.Fprintf(w, "\n## What if (MODELS of changes not made, but the first two rows): N=%d, %g Gbit/s, %g TFLOP/s\n\n", f.whatIfWorkers, f.whatIfGbits, f.wifTF)
		if err := sim.WriteVariants(w, p, sim.WhatIf(), f.parallel); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\nran in %.1f s\n", time.Since(start).Seconds())
	return nil
}
