package sim

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/tinct/tinct/control"
)

// RunAll runs every Params, up to par at once (0: GOMAXPROCS), and
// returns the results in order. Runs are independent, so the results do
// not depend on par.
func RunAll(ps []Params, par int) ([]*Result, error) {
	out, errs := RunEach(ps, par)
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("run %d (%d workers, %s): %w", i, ps[i].Workers, protoName(ps[i].Protocol), err)
		}
	}
	return out, nil
}

// RunEach is RunAll that keeps going: each run's result or error.
func RunEach(ps []Params, par int) ([]*Result, []error) {
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	out := make([]*Result, len(ps))
	errs := make([]error, len(ps))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i], errs[i] = Run(ps[i])
		})
	}
	wg.Wait()
	return out, errs
}

func protoName(p Protocol) string {
	if p == nil {
		return Pipelined{}.Name()
	}
	return p.Name()
}

// GridRow is one cell of the sweep: a cluster under each protocol.
type GridRow struct {
	Workers   int
	Gbits     float64 // link bandwidth, Gbit/s
	TFLOPS    float64 // per worker
	Protocols []string
	Results   []*Result // nil where the run stopped (Errs)
	// Errs: a run that stopped because the core ran out of workers
	// (control.ErrTooFewWorkers: e.g. every member failed its set-up and
	// was excluded) — a result of the cluster, not of the simulation.
	Errs []error
}

// Grid runs base at every workers × link × FLOP rate under each protocol.
func Grid(base Params, workers []int, gbits, tflops []float64, protos []Protocol, par int) ([]GridRow, error) {
	var ps []Params
	var rows []GridRow
	var names []string
	for _, pr := range protos {
		names = append(names, pr.Name())
	}
	for _, n := range workers {
		for _, g := range gbits {
			for _, tf := range tflops {
				rows = append(rows, GridRow{Workers: n, Gbits: g, TFLOPS: tf, Protocols: names})
				for _, pr := range protos {
					p := base
					p.Workers, p.FLOPS, p.Protocol = n, tf*1e12, pr
					p.Link.Bandwidth = g * Gbit
					ps = append(ps, p)
				}
			}
		}
	}
	res, errs := RunEach(ps, par)
	for i, err := range errs {
		if err != nil && !errors.Is(err, control.ErrTooFewWorkers) {
			return nil, fmt.Errorf("run %d (%d workers, %s): %w", i, ps[i].Workers, ps[i].Protocol.Name(), err)
		}
	}
	for i := range rows {
		rows[i].Results = res[i*len(protos) : (i+1)*len(protos)]
		rows[i].Errs = errs[i*len(protos) : (i+1)*len(protos)]
	}
	return rows, nil
}

// WriteGrid prints the sweep as a markdown table, and a note for each run
// that stopped.
func WriteGrid(w io.Writer, rows []GridRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprint(w, "| N | link Gbit/s | TFLOP/s |")
	for _, name := range rows[0].Protocols {
		fmt.Fprintf(w, " %s images/s | %s GPU busy | %s step ms = prep+compute+ring+apply+snapshot+wait |", name, name, name)
	}
	fmt.Fprint(w, "\n|---:|---:|---:|")
	for range rows[0].Protocols {
		fmt.Fprint(w, "---:|---:|---|")
	}
	fmt.Fprintln(w)
	var notes []string
	for _, row := range rows {
		fmt.Fprintf(w, "| %d | %g | %g |", row.Workers, row.Gbits, row.TFLOPS)
		for i, r := range row.Results {
			if r == nil {
				notes = append(notes, fmt.Sprintf("N=%d, %g Gbit/s, %g TFLOP/s, %s: %s", row.Workers, row.Gbits, row.TFLOPS, row.Protocols[i], ShortErr(row.Errs[i])))
				fmt.Fprintf(w, " stopped[%d] | – | – |", len(notes))
				continue
			}
			fmt.Fprintf(w, " %.0f | %.0f%% | %s |", r.ImagesPerSec, 100*r.Busy, Breakdown(r))
		}
		fmt.Fprintln(w)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for i, n := range notes {
		fmt.Fprintf(w, "[%d] %s\n", i+1, n)
	}
}

// ShortErr is an error's message without its list of excluded workers
// (the first one's reason kept).
func ShortErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "; excluded: ["); i >= 0 {
		rest := s[i+len("; excluded: ["):]
		n := strings.Count(rest, " (")
		if j := strings.Index(rest, ")"); j >= 0 {
			rest = rest[:j+1]
		}
		s = fmt.Sprintf("%s; %d excluded, the first: %s", s[:i], n, rest)
	}
	return s
}

// Breakdown is "step = prep+compute+ring+apply+snapshot+wait" in
// milliseconds.
func Breakdown(r *Result) string {
	return fmt.Sprintf("%.1f = %.1f+%.1f+%.1f+%.1f+%.1f+%.1f", ms(r.Step), ms(r.Prep), ms(r.Compute), ms(r.RingExposed), ms(r.Apply), ms(r.Snapshot), ms(r.Wait))
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }

// FaultRow is a fault scenario beside the same cluster without faults.
type FaultRow struct {
	Mode FaultMode
	Base *Result
	// Faulted are the faulted runs, one per phase: what a death throws
	// away depends on how far the replicas are past the last snapshot, so
	// the first death falls Fault.First plus (i + ½)/phases of a snapshot
	// period (the steady step × SnapshotEvery) after the window's start,
	// which is a commit: the midpoints of equal parts of the period, whose
	// mean is the mean over a uniformly random moment of death for a cost
	// that grows linearly through the period.
	Faulted []*Result
	// LostPerDeath is the cluster's time one death costs: the images a
	// faulted window committed fewer than the steady rate would have, at
	// that rate, per death; the mean over the phases, and their extremes.
	LostPerDeath, LostMin, LostMax time.Duration
	// Loss is the throughput lost with a death every Fault.Every:
	// LostPerDeath / Every (while a recovery ends before the next death).
	Loss float64
}

// Faults runs base (its Fault and Duration set: a window that holds the
// first death and its recovery) under each protocol and mode, the first
// death at each of phases points of a snapshot period (one point where
// every step is a snapshot), and the same cluster without faults (its
// steady rate, over base.Steps steps).
func Faults(base Params, modes []FaultMode, protos []Protocol, phases, par int) ([]FaultRow, error) {
	if base.Fault.Every <= 0 || base.Duration <= 0 {
		return nil, fmt.Errorf("sim: a fault scenario needs Fault.Every and Duration")
	}
	phases = max(phases, 1)
	var ps []Params
	for _, pr := range protos {
		b := base
		b.Protocol, b.Fault, b.Duration = pr, Fault{}, 0
		ps = append(ps, b)
	}
	bases, err := RunAll(ps, par)
	if err != nil {
		return nil, err
	}
	ps = ps[:0]
	type key struct{ proto, mode, n int }
	var keys []key
	for i, pr := range protos {
		k := phases
		if pr.SnapshotEvery() == 1 {
			k = 1
		}
		for j, m := range modes {
			for ph := range k {
				f := base
				f.Protocol = pr
				f.Fault.Mode = m
				f.Fault.First += time.Duration(float64(bases[i].Step) * float64(pr.SnapshotEvery()) * (float64(ph) + 0.5) / float64(k))
				ps = append(ps, f)
			}
			keys = append(keys, key{i, j, k})
		}
	}
	res, err := RunAll(ps, par)
	if err != nil {
		return nil, err
	}
	var rows []FaultRow
	at := 0
	for _, k := range keys {
		b := bases[k.proto]
		row := FaultRow{Mode: modes[k.mode], Base: b, Faulted: res[at : at+k.n]}
		at += k.n
		var sum time.Duration
		n := 0
		for _, f := range row.Faulted {
			if f.Deaths == 0 || b.ImagesPerSec <= 0 {
				continue
			}
			lost := seconds((f.Window.Seconds() - float64(f.Images)/b.ImagesPerSec) / float64(f.Deaths))
			if n == 0 || lost < row.LostMin {
				row.LostMin = lost
			}
			row.LostMax = max(row.LostMax, lost)
			sum += lost
			n++
		}
		if n > 0 {
			row.LostPerDeath = sum / time.Duration(n)
			row.Loss = row.LostPerDeath.Seconds() / base.Fault.Every.Seconds()
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// WriteFaults prints the fault scenarios as a markdown table.
func WriteFaults(w io.Writer, p Params, rows []FaultRow) {
	fmt.Fprintf(w, "| protocol | fault | images/s without | cluster time lost per death: mean (range over phases) | throughput lost, a death every %v | ring set-ups (sizes) | steps abandoned (by phase) |\n", p.Fault.Every)
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|---|")
	for _, r := range rows {
		var ab []string
		for _, f := range r.Faulted {
			ab = append(ab, fmt.Sprint(f.StepsAbandoned))
		}
		span := ""
		if len(r.Faulted) > 1 {
			span = fmt.Sprintf(" (%.1f–%.1f)", r.LostMin.Seconds(), r.LostMax.Seconds())
		}
		f := r.Faulted[0]
		fmt.Fprintf(w, "| %s | %s | %.0f | %.1f s%s | %.2f%% | %d %v | %s |\n", r.Base.Protocol, r.Mode, r.Base.ImagesPerSec,
			r.LostPerDeath.Seconds(), span, 100*r.Loss, f.Setups, f.Rings, strings.Join(ab, ", "))
	}
}

// WriteCalibration prints the calibration as a markdown table and its
// mean absolute errors.
func WriteCalibration(w io.Writer, rows []CalRow) {
	fmt.Fprintln(w, "| image | link | workers | measured step s | simulated step s | error | measured ring s after backward | simulated | machine GFLOP/s |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		e := fmt.Sprintf("%+.1f%%", 100*r.StepError)
		if r.Fitted {
			e = "fitted"
		}
		fmt.Fprintf(w, "| %d² | %s | %d | %.3f | %.3f | %s | %.3f | %.3f | %.1f |\n", r.Run.ImageSize, r.Run.Link, r.Run.Workers, r.Run.StepSeconds, r.SimStep, e,
			r.Run.RingSeconds, r.SimRing, r.FLOPS/1e9)
	}
	all, by := CalSummary(rows)
	fmt.Fprintf(w, "\nmean |error| of the predicted rows: %.1f%%", 100*all)
	for _, n := range WorkerCounts(by) {
		fmt.Fprintf(w, "; %d workers %.1f%%", n, 100*by[n])
	}
	fmt.Fprintln(w)
}

// Variant is a named change to a cluster's parameters: what-if rows.
type Variant struct {
	Name  string
	Apply func(*Params)
}

// WhatIf are the variants docs/sim.md reports at the target (N = 64,
// 10 Gbit/s): the protocol before, the pipelined one (built), then the
// pipelined one with the simulation's parameters changed one or a few at a
// time — each row after the second a MODEL of a change not made (the
// bucket is worker.OverlapBucket, the chunk allreduce.Config.ChunkBytes,
// neither exposed as a setting; the hop cost is the transport's; hiding
// the host's preparation needs the worker to prepare the next queued task
// during the current one).
func WhatIf() []Variant {
	hop := func(lat, msg time.Duration) func(*Params) {
		return func(p *Params) { p.Link.Latency, p.Link.Overhead = lat, msg }
	}
	all := func(fs ...func(*Params)) func(*Params) {
		return func(p *Params) {
			for _, f := range fs {
				f(p)
			}
		}
	}
	noPrep := func(p *Params) { p.HostPerImage = time.Nanosecond }
	apply := func(d time.Duration) func(*Params) { return func(p *Params) { p.Apply = d } }
	return []Variant{
		{"before (built until this change)", func(p *Params) { p.Protocol = Before{} }},
		{"pipelined (built: 2 in flight, snapshot every 50)", func(*Params) {}},
		{"pipelined, 1 in flight", func(p *Params) { p.Protocol = Pipelined{InFlight: 1} }},
		{"pipelined, 4 in flight, snapshot every 200", func(p *Params) { p.Protocol = Pipelined{InFlight: 4, Every: 200} }},
		{"+ buckets ≥ 2²⁰ floats (3 gradient calls, not 7)", func(p *Params) { p.MinBucket = 1 << 20 }},
		{"+ one gradient call after backward (buckets ≥ 2²¹)", func(p *Params) { p.MinBucket = 1 << 21 }},
		{"+ 4 MiB chunks (not 256 KiB)", func(p *Params) { p.ChunkBytes = 4 << 20 }},
		{"+ 1 µs per message (not 10)", hop(100*time.Microsecond, time.Microsecond)},
		{"+ 50 µs per hop (45 + 5, not 100 + 10)", hop(45*time.Microsecond, 5*time.Microsecond)},
		{"+ 25 µs per hop (20 + 5)", hop(20*time.Microsecond, 5*time.Microsecond)},
		{"+ 10 µs per hop (8 + 2)", hop(8*time.Microsecond, 2*time.Microsecond)},
		{"+ host prep hidden", noPrep},
		{"+ host prep hidden, 10 µs per hop", all(noPrep, hop(8*time.Microsecond, 2*time.Microsecond))},
		{"+ host prep hidden, no hop cost (bandwidth only)", all(noPrep, hop(time.Nanosecond, time.Nanosecond))},
		{"+ host prep hidden, 4 µs per hop, apply 2 ms", all(noPrep, hop(3600*time.Nanosecond, 400*time.Nanosecond), apply(2*time.Millisecond))},
	}
}

// WriteVariants runs base under each variant and prints a markdown table.
func WriteVariants(w io.Writer, base Params, vs []Variant, par int) error {
	var ps []Params
	for _, v := range vs {
		p := base
		v.Apply(&p)
		ps = append(ps, p)
	}
	res, err := RunAll(ps, par)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "| variant | images/s | GPU busy | step ms = prep+compute+ring+apply+snapshot+wait |")
	fmt.Fprintln(w, "|---|---:|---:|---|")
	for i, r := range res {
		fmt.Fprintf(w, "| %s | %.0f | %.1f%% | %s |\n", vs[i].Name, r.ImagesPerSec, 100*r.Busy, Breakdown(r))
	}
	return nil
}
