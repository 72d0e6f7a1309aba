package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/shim"
)

// noDriver makes the CUDA discovery look in an empty directory alone.
func noDriver(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("TINCT_CUDA_LIBS_ONLY", "1")
	t.Setenv("TINCT_CUDA_LIBS", dir)
	return dir
}

// fakeDriver builds cuda/testdata/fakecuda.c (a libcuda.so.1 with one
// "Fake H200") and makes the discovery find it alone.
func fakeDriver(t *testing.T) {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build the fake driver with")
	}
	dir := noDriver(t)
	out, err := exec.Command(cc, "-shared", "-fPIC", "-o", filepath.Join(dir, "libcuda.so.1"), filepath.Join("..", "..", "cuda", "testdata", "fakecuda.c")).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
}

func TestGPURequestsWithoutDriver(t *testing.T) {
	dir := noDriver(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "join", "--coordinator", "127.0.0.1:1", "--gpu", "1", "--secret-file", secret}, "--gpu 1: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"train", "device=cuda:0", "dataset=/nonexistent", "output_dir=" + t.TempDir()}, "device=cuda:0: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"colorize", "--gpu", "0", filepath.Join("..", "..", "data", "sample", "fields0.jpg"), "--out", t.TempDir()}, "--gpu 0: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"serve", "--gpu", "2", "--addr", "127.0.0.1:0", "--store", t.TempDir()}, "--gpu 2: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"bench", "forward", "--gpu", "0", "--size", "16", "--widths", "4,8", "--calls", "1"}, "--gpu 0: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"bench", "train", "--gpu", "0", "--size", "16", "--widths", "4,8", "--steps", "1"}, "--gpu 0: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"bench", "colorize", "--gpu", "0", "--size", "16", "--widths", "4,8", "--images", "1"}, "--gpu 0: no usable CUDA GPU: the CUDA driver (libcuda.so.1) not found"},
		{[]string{"cuda", "probe"}, "the CUDA driver (libcuda.so.1) not found"},
	} {
		_, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
			continue
		}
		// the message says where it looked
		if !strings.Contains(err.Error(), "TINCT_CUDA_LIBS "+dir+": no libcuda.so.1 or libcuda.so here") {
			t.Errorf("%v: the error does not say where it looked:\n%v", tc.args, err)
		}
	}
}

// TestTrainOnMissingGPUMakesNothing: device=cuda:N without a GPU stops
// before the run makes its folder or prepares data.
func TestTrainOnMissingGPUMakesNothing(t *testing.T) {
	noDriver(t)
	out := t.TempDir()
	if _, err := run(t, "train", "device=cuda:0", "dataset="+filepath.Join("..", "..", "data", "sample"), "output_dir="+out); err == nil {
		t.Fatal("training on a missing GPU started")
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("a refused run left %d entries in output_dir", len(entries))
	}
}

func TestGPURequestsWithDriver(t *testing.T) {
	fakeDriver(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "join", "--coordinator", "127.0.0.1:1", "--gpu", "0", "--plaintext"}, "--gpu 0: no usable CUDA GPU: found Fake H200, but: NVRTC"},
		{[]string{"worker", "join", "--coordinator", "127.0.0.1:1", "--gpu", "3", "--plaintext"}, "--gpu 3: no usable CUDA GPU: GPU 3: the driver sees 1 device(s)"},
		{[]string{"train", "device=cuda:0", "dataset=/nonexistent", "output_dir=" + t.TempDir()}, "device=cuda:0: no usable CUDA GPU: found Fake H200, but: NVRTC"},
		{[]string{"bench", "forward", "--gpu", "0", "--precision", "fp16"}, "--gpu 0: precision \"fp16\": one of fp32, tf32, bf16"},
	} {
		if _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	out, err := run(t, "cuda", "probe")
	if err != nil || !strings.Contains(out, "Fake H200 (GPU 0 of 1, compute capability 9.0, 132 multiprocessors") {
		t.Errorf("cuda probe: %v\n%s", err, out)
	}
	// find: the driver is there, NVRTC and cuBLAS are not
	out, err = run(t, "cuda", "find")
	if err == nil || !strings.Contains(out, "libcuda.so.1 (via TINCT_CUDA_LIBS") || !strings.Contains(out, "nvrtc     not found: NVRTC, the CUDA run-time compiler (libnvrtc.so.13) not found") {
		t.Errorf("cuda find: %v\n%s", err, out)
	}
	// a selftest on the GPU stops at the missing compiler, saying so
	if _, err := run(t, "cuda", "selftest"); err == nil || !strings.Contains(err.Error(), "found Fake H200, but: NVRTC") {
		t.Errorf("cuda selftest: %v", err)
	}
}

// TestSelftestCPUShim runs `tinct cuda selftest --cpu-shim`: the table the
// GPU check prints, with the kernels compiled by g++: every row passes.
func TestSelftestCPUShim(t *testing.T) {
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("no g++")
	}
	js := filepath.Join(t.TempDir(), "r.json")
	out, err := run(t, "cuda", "selftest", "--cpu-shim", "--json", js)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"backend   cpu-shim", "tolerance op check: fp32's", "batchnorm train=true forward",
		"conv3 32→32 16x16 acc=true input gradient", "adam weights (3 steps)", "hash of a vector slice",
		"network gradients", "network params step 3", "\n0 of "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	rep := readReport(t, js)
	checks := map[string]int{}
	for _, r := range rep.Results {
		checks[r["check"].(string)]++
		if r["ok"] != true {
			t.Errorf("row %v", r)
		}
	}
	if rep.Failed != 0 || checks["ops"] < 50 || checks["network"] < 10 || len(checks) != 2 {
		t.Errorf("json: %d failed, rows by check %v", rep.Failed, checks)
	}
}

type report struct {
	Results []map[string]any `json:"results"`
	Failed  int              `json:"failed"`
}

func readReport(t *testing.T, path string) report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("the JSON report does not parse: %v\n%q", err, b)
	}
	return rep
}

// openShim opens the shim for runSelftest, wrapped by wrap.
func openShim(t *testing.T, wrap func(*shim.Shim) cuda.Backend) func() (cuda.Backend, error) {
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("no g++")
	}
	return func() (cuda.Backend, error) {
		s, err := shim.Open(false)
		if err != nil {
			return nil, err
		}
		return wrap(s), nil
	}
}

// nanShim's downloads bring a NaN back in place of their first value.
type nanShim struct{ *shim.Shim }

func (s nanShim) Download(dst []float32, src cuda.Mem) error {
	err := s.Shim.Download(dst, src)
	if len(dst) > 0 {
		dst[0] = float32(math.NaN())
	}
	return err
}

// TestSelftestJSONNonFinite: a device that returns NaNs makes results
// that are not finite (NaN differences, infinite ratios to zero
// tolerances); the JSON report still holds every result, those numbers as
// strings. (It once held a newline alone: encoding/json refuses NaN and
// ±Inf, and the error went unchecked.)
func TestSelftestJSONNonFinite(t *testing.T) {
	js := filepath.Join(t.TempDir(), "r.json")
	var out bytes.Buffer
	err := runSelftest(&out, selftestFlags{shim: true, seed: 1, precision: "fp32", json: js,
		openShim: openShim(t, func(s *shim.Shim) cuda.Backend { return nanShim{s} })})
	if err == nil || strings.Contains(err.Error(), "failed to run") {
		t.Errorf("error %v, want comparisons failed (and nothing failed to run)", err)
	}
	rep := readReport(t, js)
	lines := strings.Count(out.String(), " FAIL ") + strings.Count(out.String(), " ok ")
	if len(rep.Results) == 0 || len(rep.Results) != lines || rep.Failed == 0 {
		t.Fatalf("%d results, %d failed, %d rows in the table:\n%s", len(rep.Results), rep.Failed, lines, out.String())
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		for _, k := range []string{"max_rel_diff", "max_abs_diff", "worst_of_tolerance"} {
			if v, ok := r[k].(string); ok {
				seen[k+" "+v] = true
			}
		}
	}
	for _, want := range []string{"max_rel_diff NaN", "worst_of_tolerance NaN", "max_abs_diff +Inf", "worst_of_tolerance +Inf"} {
		if !seen[want] {
			t.Errorf("no %s in the report (non-finite values seen: %v)", want, seen)
		}
	}
}

// failingLaunch fails every launch of the kernel named (every launch:
// ""), as a GPU whose launch fails does.
type failingLaunch struct {
	*shim.Shim
	kernel string
}

func (s failingLaunch) Launch(k string, grid, block cuda.Dim3, args ...any) error {
	if s.kernel == "" || k == s.kernel {
		return fmt.Errorf("launch of %s failed (injected)", k)
	}
	return s.Shim.Launch(k, grid, block, args...)
}

// TestSelftestFailingLaunch: a launch that fails (every launch, or the
// loss's alone, where the kernel cases once panicked on the buffers that
// were never made) gives FAIL rows carrying the error and a non-zero
// exit, and the report says which operation failed first; the operations
// before it pass.
func TestSelftestFailingLaunch(t *testing.T) {
	for _, tc := range []struct{ kernel, first, okBefore string }{
		{"", "copy of channel views", "upload, download at an offset"},
		{"mse", "mse loss", "embedding into a channel view"},
	} {
		js := filepath.Join(t.TempDir(), "r.json")
		var out bytes.Buffer
		err := runSelftest(&out, selftestFlags{shim: true, seed: 1, precision: "fp32", json: js,
			openShim: openShim(t, func(s *shim.Shim) cuda.Backend { return failingLaunch{s, tc.kernel} })})
		want := "operations failed to run (first: " + tc.first + ": "
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "(injected)") {
			t.Errorf("kernel %q: error %v, want %q", tc.kernel, err, want)
		}
		rep := readReport(t, js)
		rows := map[string]map[string]any{}
		errs := 0
		for _, r := range rep.Results {
			rows[r["case"].(string)] = r
			if e, ok := r["error"].(string); ok && strings.Contains(e, "(injected)") {
				errs++
				if r["ok"] != false {
					t.Errorf("kernel %q: %v has an error and passed", tc.kernel, r)
				}
			}
		}
		if rows[tc.okBefore]["ok"] != true || rows[tc.first]["ok"] != false || errs == 0 || rep.Failed < errs {
			t.Errorf("kernel %q: %s %v, %s %v, %d rows with the error, %d failed", tc.kernel,
				tc.okBefore, rows[tc.okBefore], tc.first, rows[tc.first], errs, rep.Failed)
		}
		if !strings.Contains(out.String(), tc.first) || !strings.Contains(out.String(), " FAIL ") {
			t.Errorf("kernel %q: the table:\n%s", tc.kernel, out.String())
		}
	}
}
