package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// clangPrelude stands in for the CUDA headers NVRTC provides (none are
// installed here): the attribute macros, clang's own built-in variables,
// and the device math the kernels call.
const clangPrelude = `#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __inline__ __attribute__((always_inline))
#include "__clang_cuda_builtin_vars.h"
__device__ double sqrt(double);
__device__ double sin(double);
__device__ double cos(double);
__device__ double fmax(double, double);
`

// TestKernelsCompileAsCUDA compiles the kernels' source as CUDA with
// clang's front end to PTX, where a clang is installed (it is not in CI;
// NVRTC itself cannot be installed here), and checks that every kernel is
// an entry under its own name with the parameters Launch packs: 8 bytes
// for pointers, 4 for int and float.
func TestKernelsCompileAsCUDA(t *testing.T) {
	var clang string
	for _, c := range []string{"clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14"} {
		if p, err := exec.LookPath(c); err == nil {
			clang = p
			break
		}
	}
	if clang == "" {
		t.Skip("no clang: the source is not compiled as CUDA on this machine")
	}
	dir := t.TempDir()
	src, pre, ptx := filepath.Join(dir, "k.cu"), filepath.Join(dir, "prelude.h"), filepath.Join(dir, "k.ptx")
	if err := os.WriteFile(src, []byte(Source()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pre, []byte(clangPrelude), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(clang, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc", "-nocudalib",
		"-std=c++17", "-ffp-contract=off", "-Werror", "-include", pre, "-S", "-o", ptx, src).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", clang, err, out)
	}
	b, err := os.ReadFile(ptx)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string][]string{}
	for _, m := range regexp.MustCompile(`\.entry (\w+)\(([^)]*)\)`).FindAllStringSubmatch(string(b), -1) {
		var types []string
		for _, p := range regexp.MustCompile(`\.param \.(\w+)`).FindAllStringSubmatch(m[2], -1) {
			types = append(types, p[1])
		}
		entries[m[1]] = types
	}
	ks, err := Kernels()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(ks) {
		t.Errorf("%d entries in the PTX, %d kernels", len(entries), len(ks))
	}
	ptxType := map[ArgKind]string{ArgF32Ptr: "u64", ArgF64Ptr: "u64", ArgInt: "u32", ArgFloat: "f32"}
	for _, k := range ks {
		got, ok := entries[k.Name]
		if !ok {
			t.Errorf("kernel %s: no entry (mangled, or not __global__?)", k.Name)
			continue
		}
		var want []string
		for _, p := range k.Params {
			want = append(want, ptxType[p.Kind])
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("kernel %s: PTX params %v, parsed %v", k.Name, got, want)
		}
	}
}
