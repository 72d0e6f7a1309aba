package check

import (
	"errors"
	"strings"
	"testing"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/shim"
)

// startShim starts the shim (compiled once and cached, see
// shim.Executable).
func startShim(t *testing.T, reverse bool) *shim.Shim {
	t.Helper()
	exe, err := shim.Executable()
	if errors.Is(err, shim.ErrNoCompiler) {
		t.Skip("no g++: the kernels' arithmetic is not checked on this machine")
	}
	if err != nil {
		t.Fatal(err)
	}
	return start(t, exe, reverse)
}

func start(t *testing.T, exe string, reverse bool) *shim.Shim {
	s, err := shim.Start(exe, reverse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestKernelsMatchCPU runs every kernel through the shim and compares it
// with the Go CPU ops, on two seeds.
func TestKernelsMatchCPU(t *testing.T) {
	s := startShim(t, false)
	seen := map[string]bool{}
	for _, seed := range []uint64{1, 2} {
		// the second seed with grids of 16 blocks: the grid-stride loops
		// and the per-block partial sums go round several times
		s.Multiprocessors = int(seed - 1)
		for _, r := range Run(s, seed) {
			seen[strings.Fields(r.Case)[0]] = true
			if !r.OK() {
				t.Errorf("seed %d: %v", seed, r)
			} else if seed == 1 {
				t.Log(r)
			}
		}
	}
	// every kernel ran in some case
	ks, err := cuda.Kernels()
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string][]string{
		"bn_stats": {"bn_forward"}, "bn_eval_stats": {"bn_forward"}, "bn_apply": {"bn_forward"},
		"sum_f64": {"mse"}, "im2col3": {"conv3x3"}, "bias_forward": {"conv3x3", "conv1x1"},
		"bias_grad": {"conv3x3", "conv1x1"}, "rot_weights": {"conv3x3"},
	}
	for _, k := range ks {
		names := covered[k.Name]
		if names == nil {
			names = []string{k.Name}
		}
		for _, n := range names {
			if !seen[n] {
				t.Errorf("kernel %s: no case %s ran", k.Name, n)
			}
		}
	}
	if s.Runs < len(ks) {
		t.Errorf("%d launches for %d kernels", s.Runs, len(ks))
	}
}

// TestKernelsOrderIndependent runs the cases with blocks and threads in
// reverse order: every result must be the same as in order, bit for bit
// (each output has one writer; the reductions sum in a fixed tree).
func TestKernelsOrderIndependent(t *testing.T) {
	var runs [2][]Result
	for i, rev := range []bool{false, true} {
		s := startShim(t, rev)
		s.Multiprocessors = 1
		runs[i] = Run(s, 3)
	}
	if len(runs[0]) != len(runs[1]) {
		t.Fatalf("%d and %d results", len(runs[0]), len(runs[1]))
	}
	for i, a := range runs[0] {
		b := runs[1][i]
		if !b.OK() {
			t.Errorf("reversed: %v", b)
		}
		if a.MaxAbs != b.MaxAbs || a.Worst != b.Worst {
			t.Errorf("%s: in order max |Δ| %g, reversed %g", a.Case, a.MaxAbs, b.MaxAbs)
		}
	}
}

// TestCompareCatchesErrors makes sure a wrong kernel would fail: a result
// off by more than the tolerance, a NaN, a wrong length.
func TestCompareCatchesErrors(t *testing.T) {
	want := []float32{1, 2, 3}
	if r := Compare("x", []float32{1, 2, 3.001}, want, Tol{1e-6, 1e-6}); r.OK() {
		t.Errorf("3.001 vs 3 passed: %v", r)
	}
	if r := Compare("x", []float32{1, 2, float32(nan())}, want, Tol{1, 1}); r.OK() {
		t.Errorf("NaN passed: %v", r)
	}
	if r := Compare("x", []float32{1, 2}, want, Tol{1, 1}); r.OK() {
		t.Errorf("short result passed: %v", r)
	}
	if r := Compare("x", []float32{1, 2, 3.000001}, want, Tol{1e-6, 1e-6}); !r.OK() {
		t.Errorf("within tolerance failed: %v", r)
	}
}

func nan() float64 { var z float64; return z / z }

// TestShimCatchesBrokenKernel breaks a kernel in the source the shim
// compiles and checks that its case fails: the comparison has teeth.
func TestShimCatchesBrokenKernel(t *testing.T) {
	src, err := shim.Source()
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(src, "0.25f * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1])", "0.25f * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox])", 1)
	if broken == src {
		t.Fatal("avgpool2_forward's expression not found in the source")
	}
	s := startShimFrom(t, broken)
	for _, r := range Run(s, 1) {
		if r.Case == "avgpool2_forward" && r.OK() {
			t.Errorf("broken avgpool2_forward passed: %v", r)
		}
		if r.Case == "avgpool2_backward" && !r.OK() {
			t.Errorf("avgpool2_backward failed: %v", r)
		}
	}
}

func startShimFrom(t *testing.T, src string) *shim.Shim {
	t.Helper()
	exe, err := shim.BuildSource(t.TempDir(), src)
	if errors.Is(err, shim.ErrNoCompiler) {
		t.Skip("no g++")
	}
	if err != nil {
		t.Fatal(err)
	}
	return start(t, exe, false)
}

// TestShimCatchesMissingBarrier removes the barrier after the block sum is
// read: the next sum then overwrites the shared array while other threads
// still read it, as on a GPU, and the BatchNorm cases fail. The shim's
// fibers honour __syncthreads; a shim without them would pass this.
func TestShimCatchesMissingBarrier(t *testing.T) {
	src, err := shim.Source()
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(src, "\tdouble total = red[0];\n\t__syncthreads();", "\tdouble total = red[0];", 1)
	if broken == src {
		t.Fatal("tinct_block_sum's last barrier not found")
	}
	s := startShimFrom(t, broken)
	failed := 0
	for _, r := range Run(s, 1) {
		if strings.HasPrefix(r.Case, "bn_") && !r.OK() {
			failed++
		}
	}
	if failed == 0 {
		t.Error("the BatchNorm cases passed without the barrier")
	}
}
