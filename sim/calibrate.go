package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Measured is one row of bench/scale.json: the compose cluster on one
// machine, every worker and the coordinator in containers sharing its
// cores, links shaped by tc to a bandwidth.
type Measured struct {
	ImageSize   int     `json:"image_size"`
	Link        string  `json:"link"` // "1gbit", "10gbit"
	Workers     int     `json:"workers"`
	Batch       int     `json:"batch"` // the whole step's
	Steps       int     `json:"steps_measured"`
	StepSeconds float64 `json:"step_seconds"`
	RingSeconds float64 `json:"ring_seconds"` // the slowest worker's ring calls after its backward
}

// ReadMeasured reads bench/scale.json.
func ReadMeasured(path string) ([]Measured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ms []Measured
	if err := json.Unmarshal(b, &ms); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ms, nil
}

// LinkRate parses "1gbit", "10gbit", "100mbit" into bytes per second.
func LinkRate(s string) (float64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return 0, fmt.Errorf("link %q: want a rate such as 1gbit", s)
			}
			return f * u.mult / 8, nil
		}
	}
	return 0, fmt.Errorf("link %q: want a rate such as 1gbit", s)
}

// Machine is the calibration's model of the one machine the measured runs
// shared: its cores, its compute rate with all of them, and its measured
// per-step costs.
type Machine struct {
	Cores int
	// Rates are one process's training rate using every core, FLOP/s, by
	// image size; a size not in it is fitted to its one-worker run.
	Rates map[int]float64
	// ApplyCPU is a worker's Apply and checksum on one core
	// (BenchmarkWorkerApply); it is shared like compute when more workers
	// than cores apply at once.
	ApplyCPU time.Duration
	// HostPerImage128 is model.NoisyExample's time at 128² plus reading
	// the example (BenchmarkHostPrep), scaled by pixels for other sizes.
	HostPerImage128 time.Duration
	Commit          time.Duration // BenchmarkCommit here
	// Loopback links: the containers' veth pairs, shaped by tbf; one
	// stream's rate is bounded by the CPU (the all-reduce's measured bus
	// bandwidth on loopback, docs/benchmarks.md).
	StreamRate float64
	Latency    time.Duration
	Overhead   time.Duration
	// Protocol the runs were measured with (nil: Before — bench/scale.json
	// predates the pipelined protocol). A scale.json measured with the
	// pipelined one is simulated with Pipelined{} of its config.
	Protocol Protocol
}

// ThisMachine is the 2-core development VM the runs of bench/scale.json
// came from, with what was measured on it (docs/sim.md), and the protocol
// they ran (Before).
func ThisMachine() Machine {
	return Machine{Cores: 2, ApplyCPU: 9400 * time.Microsecond, HostPerImage128: 450 * time.Microsecond, Commit: 57 * time.Millisecond,
		StreamRate: 1.3e9, Latency: 100 * time.Microsecond, Overhead: 10 * time.Microsecond, Protocol: Before{}}
}

// Params is the simulation of one measured run on machine m at a
// machine-wide rate flops: N workers computing at once each get 1/N of it
// (and of the cores for Apply beyond one each).
func (m Machine) Params(run Measured, flops float64) (Params, error) {
	rate, err := LinkRate(run.Link)
	if err != nil {
		return Params{}, err
	}
	n := run.Workers
	if n < 1 || run.Batch%n != 0 {
		return Params{}, fmt.Errorf("run %+v: batch must be a multiple of the workers", run)
	}
	net, err := DefaultNetwork(run.ImageSize)
	if err != nil {
		return Params{}, err
	}
	share := float64(max(n, 1))
	proto := m.Protocol
	if proto == nil {
		proto = Before{}
	}
	apply := time.Duration(float64(m.ApplyCPU) * math.Max(1, float64(n)/float64(m.Cores)))
	px := float64(run.ImageSize*run.ImageSize) / (128 * 128)
	l := Link{Bandwidth: rate, StreamRate: m.StreamRate, Latency: m.Latency, Overhead: m.Overhead}
	return Params{Workers: n, ImageSize: run.ImageSize, Batch: run.Batch / n, FLOPS: flops / share, Net: net,
		HostPerImage: time.Duration(float64(m.HostPerImage128) * px), Apply: apply, Commit: m.Commit,
		Link: l, Protocol: proto, Warmup: 3, Steps: 10}, nil
}

// CalRow is one measured run beside its simulation.
type CalRow struct {
	Run       Measured
	FLOPS     float64 // the machine's rate used
	Fitted    bool    // this run fixed the rate (its error is 0 by construction)
	SimStep   float64 // seconds
	SimRing   float64 // seconds of all-reduce after backward
	StepError float64 // (sim − measured) / measured
}

// Calibrate simulates every measured run. The machine's FLOP rate, for an
// image size m.Rates does not give, is fitted to the one-worker run on the
// first link listed, so that every other run is a prediction.
func Calibrate(m Machine, runs []Measured) ([]CalRow, error) {
	rates := map[int]float64{}
	fitted := map[int]int{}
	for size, f := range m.Rates {
		rates[size] = f
	}
	for i, r := range runs {
		if _, ok := rates[r.ImageSize]; ok || r.Workers != 1 {
			continue
		}
		f, err := m.fit(r)
		if err != nil {
			return nil, err
		}
		rates[r.ImageSize], fitted[r.ImageSize] = f, i
	}
	var rows []CalRow
	for i, r := range runs {
		f, ok := rates[r.ImageSize]
		if !ok {
			return nil, fmt.Errorf("no one-worker run at %d² to fit the machine's rate on", r.ImageSize)
		}
		p, err := m.Params(r, f)
		if err != nil {
			return nil, err
		}
		res, err := Run(p)
		if err != nil {
			return nil, err
		}
		j, isFit := fitted[r.ImageSize]
		rows = append(rows, CalRow{Run: r, FLOPS: f, Fitted: isFit && j == i, SimStep: res.Step.Seconds(), SimRing: res.RingExposed.Seconds(),
			StepError: (res.Step.Seconds() - r.StepSeconds) / r.StepSeconds})
	}
	return rows, nil
}

// fit finds the rate at which the simulated one-worker step takes the
// measured time: the step is a/rate + b, so two runs give a and b.
func (m Machine) fit(r Measured) (float64, error) {
	step := func(f float64) (float64, error) {
		p, err := m.Params(r, f)
		if err != nil {
			return 0, err
		}
		res, err := Run(p)
		if err != nil {
			return 0, err
		}
		return res.Step.Seconds(), nil
	}
	f1, f2 := 50e9, 100e9
	t1, err := step(f1)
	if err != nil {
		return 0, err
	}
	t2, err := step(f2)
	if err != nil {
		return 0, err
	}
	a := (t1 - t2) / (1/f1 - 1/f2)
	b := t1 - a/f1
	if r.StepSeconds <= b || a <= 0 {
		return 0, fmt.Errorf("run %+v: its step (%.3f s) is shorter than the model's fixed costs (%.3f s)", r, r.StepSeconds, b)
	}
	return a / (r.StepSeconds - b), nil
}

// CalSummary is the mean absolute step error of the predicted rows, over
// all and by worker count.
func CalSummary(rows []CalRow) (all float64, byWorkers map[int]float64) {
	byWorkers = map[int]float64{}
	count := map[int]int{}
	n := 0
	for _, r := range rows {
		if r.Fitted {
			continue
		}
		e := math.Abs(r.StepError)
		all += e
		n++
		byWorkers[r.Run.Workers] += e
		count[r.Run.Workers]++
	}
	for k := range byWorkers {
		byWorkers[k] /= float64(count[k])
	}
	if n > 0 {
		all /= float64(n)
	}
	return all, byWorkers
}

// WorkerCounts lists the keys of a by-workers map in order.
func WorkerCounts(m map[int]float64) []int {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// BenchRow is one row of bench/scaling.json (tinct bench train: one
// process, every core).
type BenchRow struct {
	Backend   string  `json:"backend"`
	Size      int     `json:"size"`
	Batch     int     `json:"batch"`
	MsPerStep float64 `json:"ms_per_step"`
}

// RatesFromScaling reads bench/scaling.json and returns the training rate,
// FLOP/s, of backend at each image size (batch 8 rows, the FLOP count of
// the default network): an estimate of Machine.Rates independent of the
// cluster runs.
func RatesFromScaling(path, backend string) (map[int]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []BenchRow
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rates := map[int]float64{}
	for _, r := range rows {
		if r.Backend != backend || r.Batch != 8 || r.MsPerStep <= 0 {
			continue
		}
		net, err := DefaultNetwork(r.Size)
		if err != nil {
			continue
		}
		rates[r.Size] = float64(r.Batch) * net.FLOPsPerImage() / (r.MsPerStep / 1e3)
	}
	if len(rates) == 0 {
		return nil, fmt.Errorf("%s: no %s rows at batch 8", path, backend)
	}
	return rates, nil
}
