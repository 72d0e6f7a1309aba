package sim

import (
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
)

// RunAll runs every Params, up to par at once (0: GOMAXPROCS), and
// returns the results in order. Runs are independent, so the results do
// not depend on par.
func RunAll(ps []Params, par int) ([]*Result, error) {
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
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("run %d (%d workers, %s): %w", i, ps[i].Workers, ps[i].Protocol.Name(), err)
		}
	}
	return out, nil
}

// GridRow is one cell of the sweep: a cluster under each protocol.
type GridRow struct {
	Workers int
	Gbits   float64 // link bandwidth, Gbit/s
	TFLOPS  float64 // per worker
	Results []*Result
}

// Grid runs base at every workers × link × FLOP rate under each protocol.
func Grid(base Params, workers []int, gbits, tflops []float64, protos []Protocol, par int) ([]GridRow, error) {
	var ps []Params
	var rows []GridRow
	for _, n := range workers {
		for _, g := range gbits {
			for _, tf := range tflops {
				rows = append(rows, GridRow{Workers: n, Gbits: g, TFLOPS: tf})
				for _, pr := range protos {
					p := base
					p.Workers, p.FLOPS, p.Protocol = n, tf*1e12, pr
					p.Link.Bandwidth = g * Gbit
					ps = append(ps, p)
				}
			}
		}
	}
	res, err := RunAll(ps, par)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].Results = res[i*len(protos) : (i+1)*len(protos)]
	}
	return rows, nil
}

// WriteGrid prints the sweep as a markdown table.
func WriteGrid(w io.Writer, rows []GridRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprint(w, "| N | link Gbit/s | TFLOP/s |")
	for _, r := range rows[0].Results {
		name := r.Protocol
		fmt.Fprintf(w, " %s images/s | %s GPU busy | %s step ms = prep+compute+ring+apply+wait |", name, name, name)
	}
	fmt.Fprint(w, "\n|---:|---:|---:|")
	for range rows[0].Results {
		fmt.Fprint(w, "---:|---:|---|")
	}
	fmt.Fprintln(w)
	for _, row := range rows {
		fmt.Fprintf(w, "| %d | %g | %g |", row.Workers, row.Gbits, row.TFLOPS)
		for _, r := range row.Results {
			fmt.Fprintf(w, " %.0f | %.0f%% | %s |", r.ImagesPerSec, 100*r.Busy, Breakdown(r))
		}
		fmt.Fprintln(w)
	}
}

// Breakdown is "step = prep+compute+ring+apply+wait" in milliseconds.
func Breakdown(r *Result) string {
	return fmt.Sprintf("%.1f = %.1f+%.1f+%.1f+%.1f+%.1f", ms(r.Step), ms(r.Prep), ms(r.Compute), ms(r.RingExposed), ms(r.Apply), ms(r.Wait))
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }

// FaultRow is a fault scenario beside the same run without faults.
type FaultRow struct {
	Mode          FaultMode
	Base, Faulted *Result
	Loss          float64 // 1 − images committed with faults / without
}

// Faults runs base (its Fault and Duration set) under each protocol and
// mode, and the same without faults, over the same simulated window.
func Faults(base Params, modes []FaultMode, protos []Protocol, par int) ([]FaultRow, error) {
	if base.Fault.Every <= 0 || base.Duration <= 0 {
		return nil, fmt.Errorf("sim: a fault scenario needs Fault.Every and Duration")
	}
	var ps []Params
	for _, pr := range protos {
		b := base
		b.Protocol, b.Fault = pr, Fault{}
		ps = append(ps, b)
		for _, m := range modes {
			f := base
			f.Protocol = pr
			f.Fault.Mode = m
			ps = append(ps, f)
		}
	}
	res, err := RunAll(ps, par)
	if err != nil {
		return nil, err
	}
	var rows []FaultRow
	k := 0
	for range protos {
		b := res[k]
		k++
		for _, m := range modes {
			f := res[k]
			k++
			rows = append(rows, FaultRow{Mode: m, Base: b, Faulted: f, Loss: 1 - float64(f.Images)/float64(b.Images)})
		}
	}
	return rows, nil
}

// WriteFaults prints the fault scenarios as a markdown table.
func WriteFaults(w io.Writer, p Params, rows []FaultRow) {
	fmt.Fprintln(w, "| protocol | fault | images/s without | images/s with | throughput lost | deaths | ring set-ups (sizes) | steps abandoned | GPU busy with |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.2f%% | %d | %d %v | %d | %.0f%% |\n", r.Base.Protocol, r.Mode, r.Base.ImagesPerSec, r.Faulted.ImagesPerSec,
			100*r.Loss, r.Faulted.Deaths, r.Faulted.Setups, r.Faulted.Rings, r.Faulted.Abandons, 100*r.Faulted.Busy)
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
// 10 Gbit/s): today's protocol, the ideal-pipelined model, and that model
// with each of the other costs of a step removed or cut — all MODELS but
// the first.
func WhatIf() []Variant {
	ideal := func(p *Params) { p.Protocol = IdealPipelined{} }
	noPrep := func(p *Params) { p.HostPerImage = time.Nanosecond }
	hop := func(p *Params) { p.Link.Latency, p.Link.Overhead = 20*time.Microsecond, 5*time.Microsecond }
	oneBucket := func(p *Params) { p.MinBucket = 1 << 30 }
	return []Variant{
		{"today (built)", func(*Params) {}},
		{"ideal-pipelined (model)", ideal},
		{"ideal + host prep overlapped", func(p *Params) { ideal(p); noPrep(p) }},
		{"ideal + 25 µs per ring hop (not 110)", func(p *Params) { ideal(p); hop(p) }},
		{"ideal + one all-reduce after backward", func(p *Params) { ideal(p); oneBucket(p) }},
		{"ideal + prep overlapped + 25 µs per hop", func(p *Params) { ideal(p); noPrep(p); hop(p) }},
		{"ideal + all three", func(p *Params) { ideal(p); noPrep(p); hop(p); oneBucket(p) }},
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
	fmt.Fprintln(w, "| variant | images/s | GPU busy | step ms = prep+compute+ring+apply+wait |")
	fmt.Fprintln(w, "|---|---:|---:|---|")
	for i, r := range res {
		fmt.Fprintf(w, "| %s | %.0f | %.0f%% | %s |\n", vs[i].Name, r.ImagesPerSec, 100*r.Busy, Breakdown(r))
	}
	return nil
}
