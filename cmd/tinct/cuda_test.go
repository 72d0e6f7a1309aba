package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
// GPU check prints, with the kernels compiled by g++.
func TestSelftestCPUShim(t *testing.T) {
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("no g++")
	}
	js := filepath.Join(t.TempDir(), "r.json")
	out, err := run(t, "cuda", "selftest", "--cpu-shim", "--json", js)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"backend   cpu-shim", "bn_forward train", "conv3x3 backward acc=true dx", "adam params (3 steps)", "network gradients", "network params step 3", "\n0 of "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(js)
	if err != nil || !strings.Contains(string(b), `"failed": 0`) {
		t.Errorf("json: %v\n%s", err, b)
	}
}
