package check

import (
	"crypto/sha256"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/shim"
	"github.com/tinct/tinct/nn/opcheck"
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

// recorder is a Backend that counts each kernel's launches and keeps a
// hash of every value downloaded, in order.
type recorder struct {
	cuda.Backend
	launches  map[string]int
	downloads [][32]byte
}

func record(b cuda.Backend) *recorder { return &recorder{Backend: b, launches: map[string]int{}} }

func (r *recorder) Launch(k string, grid, block cuda.Dim3, args ...any) error {
	r.launches[k]++
	return r.Backend.Launch(k, grid, block, args...)
}

func (r *recorder) Download(dst []float32, src cuda.Mem) error {
	err := r.Backend.Download(dst, src)
	b := make([]byte, 0, 4*len(dst))
	for _, v := range dst {
		b = append(b, byte(math.Float32bits(v)), byte(math.Float32bits(v)>>8), byte(math.Float32bits(v)>>16), byte(math.Float32bits(v)>>24))
	}
	r.downloads = append(r.downloads, sha256.Sum256(b))
	return err
}

// ops runs nn/opcheck's check on b through a cuda.Compute and returns the
// failures. The Compute does not close b (its Close is hidden from it).
func ops(b cuda.Backend, seed uint64, tol opcheck.Tols) (failed []opcheck.Result) {
	c := cuda.NewCompute(struct{ cuda.Backend }{b})
	defer c.Close()
	for _, r := range opcheck.Run(c, seed, tol) {
		if !r.OK() {
			failed = append(failed, r)
		}
	}
	return failed
}

// TestOpsLaunchEveryKernel: the op check (which go test runs on the shim
// in nn/opcheck, and `tinct cuda selftest` on a GPU) launches every kernel
// of the source, so each is checked; with 16-block grids, so that the
// grid-stride loops and the per-block partial sums go round several times.
func TestOpsLaunchEveryKernel(t *testing.T) {
	s := startShim(t, false)
	s.Multiprocessors = 1
	r := record(s)
	for _, f := range ops(r, 2, opcheck.FP32) {
		t.Error(f)
	}
	ks, err := cuda.Kernels()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if r.launches[k.Name] == 0 {
			t.Errorf("kernel %s: never launched by the op check (if nothing launches it, delete it)", k.Name)
		} else {
			t.Logf("%-20s %3d launches", k.Name, r.launches[k.Name])
		}
	}
}

// TestOpsOrderIndependent runs the op check with the shim's blocks and
// threads in reverse order: every value it reads back must be the same as
// in order, bit for bit (each output has one writer; the reductions sum in
// a fixed tree). A result that depended on the order would race on a GPU.
func TestOpsOrderIndependent(t *testing.T) {
	var runs [2]*recorder
	for i, rev := range []bool{false, true} {
		s := startShim(t, rev)
		s.Multiprocessors = 1 // grid-stride loops go round
		runs[i] = record(s)
		for _, f := range ops(runs[i], 3, opcheck.FP32) {
			t.Errorf("reverse=%v: %v", rev, f)
		}
	}
	a, b := runs[0].downloads, runs[1].downloads
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%d and %d downloads", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("download %d of %d: other values in reverse order", i+1, len(a))
		}
	}
}

// TestShimCatchesBrokenKernel breaks a kernel in the source the shim
// compiles: the op check fails at its operation, and not before.
func TestShimCatchesBrokenKernel(t *testing.T) {
	src, err := shim.Source()
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(src, "0.25f * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1])", "0.25f * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox])", 1)
	if broken == src {
		t.Fatal("avgpool2_forward's expression not found in the source")
	}
	// (the cases after it that read its output fail too)
	if failed := ops(startShimFrom(t, broken), 1, opcheck.FP32); len(failed) == 0 || failed[0].Case != "avgpool forward" {
		t.Errorf("a broken avgpool2_forward: failed %v, want avgpool forward first", failed)
	}
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
	var bn []string
	for _, f := range ops(startShimFrom(t, broken), 1, opcheck.FP32) {
		if strings.HasPrefix(f.Case, "batchnorm") {
			bn = append(bn, f.Case)
		}
	}
	if len(bn) == 0 {
		t.Error("the BatchNorm cases passed without the barrier")
	}
	t.Logf("failed without the barrier: %q", bn)
}

// rounded is a Backend whose products round their inputs' mantissas to
// bits bits, by truncation (the worse of the two roundings), and sum in
// float32: cuBLAS's fast tf32 (10 bits) and bf16 (7 bits) modes.
type rounded struct {
	*shim.Shim
	bits uint
}

func (r rounded) Gemm(g cuda.Gemm) error {
	if err := g.Validate(); err != nil {
		return err
	}
	round := func(m cuda.Mem) []float32 {
		f := m.(shim.HostMem).Floats()
		out := make([]float32, len(f))
		for i, v := range f {
			out[i] = math.Float32frombits(math.Float32bits(v) &^ (1<<(23-r.bits) - 1))
		}
		return out
	}
	cuda.HostGemm(g, round(g.A), round(g.B), g.C.(shim.HostMem).Floats())
	return nil
}

// TestPrecisionTolerances: opcheck's TF32 and BF16 tolerances, which
// `tinct cuda selftest --precision tf32|bf16` judges the op check by, pass
// products with inputs so rounded, with a margin (the largest relative
// difference here is at most a third of the tolerance), while the fp32
// tolerances fail them: the looser ones are needed, and no looser than
// about 3.5 times the rounding's effect.
func TestPrecisionTolerances(t *testing.T) {
	for _, p := range []struct {
		name string
		bits uint
		tol  opcheck.Tols
	}{{"tf32", 10, opcheck.TF32}, {"bf16", 7, opcheck.BF16}} {
		b := rounded{startShim(t, false), p.bits}
		third := p.tol
		third.Product /= 3
		for _, f := range ops(b, 1, third) {
			t.Errorf("%s products: %v", p.name, f)
		}
		if failed := ops(b, 1, opcheck.FP32); len(failed) == 0 || !strings.HasPrefix(failed[0].Case, "conv") {
			t.Errorf("%s products pass the fp32 tolerances: failed %v", p.name, failed)
		}
	}
}

// TestCompareCatchesErrors makes sure a wrong result would fail: one off by
// more than the tolerance, a NaN, a wrong length.
func TestCompareCatchesErrors(t *testing.T) {
	want := []float32{1, 2, 3}
	if r := Compare("x", []float32{1, 2, 3.001}, want, Tol{1e-6, 1e-6}); r.OK() {
		t.Errorf("3.001 vs 3 passed: %v", r)
	}
	if r := Compare("x", []float32{1, 2, float32(math.NaN())}, want, Tol{1, 1}); r.OK() {
		t.Errorf("NaN passed: %v", r)
	}
	if r := Compare("x", []float32{1, 2}, want, Tol{1, 1}); r.OK() {
		t.Errorf("short result passed: %v", r)
	}
	if r := Compare("x", []float32{1, 2, 3.000001}, want, Tol{1e-6, 1e-6}); !r.OK() {
		t.Errorf("within tolerance failed: %v", r)
	}
}
