// Package check runs a tiny network on a cuda.Compute and the same network
// on tinct's Go kernels, through model's own API, and compares them
// (Network): the forward, a training step's gradients and ready calls,
// Adam steps, the EMA. Each operation on its own is nn/opcheck's check,
// which every backend passes; this one checks that they compose, on any
// cuda.Backend: the CPU shim (package cuda/shim), which the tests run on
// every machine with g++, and a GPU (`tinct cuda selftest`,
// scripts/gpu-check.sh).
//
// The tests also check the kernels themselves through the shim: the same
// results with blocks and threads run in reverse order, and that the op
// check fails on a kernel broken on purpose or missing a barrier.
package check

import (
	"fmt"
	"math"
)

// Tol is an element-wise tolerance: |got − want| ≤ Abs + Rel·|want|.
type Tol struct{ Abs, Rel float64 }

// Result is one comparison.
type Result struct {
	Case   string
	Elems  int
	MaxAbs float64 // largest |got − want|
	Worst  float64 // largest |got − want| / (Abs + Rel·|want|): ≤ 1 passes
	Tol    Tol
	// Err is a failure to run (the device's, or the network's set-up).
	Err error
	// Mismatch says what differs where the comparison is not of values
	// (the ready calls, the count of training batches); "" when nothing
	// does.
	Mismatch string
}

// OK reports a pass.
func (r Result) OK() bool {
	return r.Err == nil && r.Mismatch == "" && r.Worst <= 1 && !math.IsNaN(r.Worst)
}

func (r Result) String() string {
	state := "ok"
	if !r.OK() {
		state = "FAIL"
	}
	switch {
	case r.Err != nil:
		return fmt.Sprintf("%-26s %-4s %v", r.Case, state, r.Err)
	case r.Mismatch != "":
		return fmt.Sprintf("%-26s %-4s %s", r.Case, state, r.Mismatch)
	}
	return fmt.Sprintf("%-26s %-4s %9d values  max |Δ| %.3g  (tol %.0e + %.0e·|ref|, worst %.2f of it)", r.Case, state, r.Elems, r.MaxAbs, r.Tol.Abs, r.Tol.Rel, r.Worst)
}

// Compare measures got against want.
func Compare(name string, got, want []float32, tol Tol) Result {
	r := Result{Case: name, Elems: len(want), Tol: tol}
	if len(got) != len(want) {
		r.Mismatch = fmt.Sprintf("%d values, want %d", len(got), len(want))
		return r
	}
	for i, w := range want {
		d := math.Abs(float64(got[i]) - float64(w))
		if math.IsNaN(float64(got[i])) != math.IsNaN(float64(w)) {
			d = math.Inf(1)
		}
		r.MaxAbs = max(r.MaxAbs, d)
		if d > 0 {
			r.Worst = max(r.Worst, d/(tol.Abs+tol.Rel*math.Abs(float64(w))))
		}
	}
	return r
}
