package cuda

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// The Device against all-success fakes of NVIDIA's libraries
// (testdata/fakecuda.c with FAKE_CUDA_OK=1, fakenvrtc.c, fakecublas.c,
// fakecublaslt.c): every binding is called through purego as on a GPU, the
// fakes check each call's arguments as the real libraries would and record
// them, and the tests read the record back. The fakes compute nothing: a
// downloaded buffer holds what was uploaded, copied or set, not what a
// kernel would have written.

// fakeLibs builds the fakes with gcc into a new directory under the names
// the Finder looks for, and points the discovery at it alone.
func fakeLibs(t *testing.T) (dir, record string) {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build the fake libraries with")
	}
	dir = t.TempDir()
	for _, l := range []struct{ src, lib string }{
		{"fakecuda.c", "libcuda.so.1"},
		{"fakenvrtc.c", "libnvrtc.so.13"},
		{"fakecublaslt.c", "libcublasLt.so.13"},
		{"fakecublas.c", "libcublas.so.13"},
	} {
		out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o", filepath.Join(dir, l.lib),
			filepath.Join("testdata", l.src), "-ldl", "-lpthread").CombinedOutput()
		if err != nil {
			t.Fatalf("gcc %s: %v\n%s", l.src, err, out)
		}
	}
	record = filepath.Join(dir, "calls.log")
	t.Setenv("TINCT_CUDA_LIBS", dir)
	t.Setenv("TINCT_CUDA_LIBS_ONLY", "1")
	t.Setenv("FAKE_CUDA_LOG", record)
	t.Setenv("FAKE_CUDA_OK", "1")
	t.Setenv("FAKE_CUDA_FAIL", "")
	return dir, record
}

// call is one line of the record: the function, its key=value arguments
// and outputs, and the line itself. VIOLATION and FAILED lines have those
// words as fn.
type call struct {
	fn   string
	kv   map[string]string
	line string
}

func readRecord(t *testing.T, path string) []call {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []call
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		c := call{fn: f[0], kv: map[string]string{}, line: line}
		for _, w := range f[1:] {
			if k, v, ok := strings.Cut(w, "="); ok {
				c.kv[k] = v
			}
		}
		out = append(out, c)
	}
	return out
}

// want is a call expected in the record: its function and some of its
// key=value pairs.
type want struct {
	fn string
	kv []string // "key=value"
}

func w(fn string, kv ...string) want { return want{fn, kv} }

func (x want) match(c call) bool {
	if c.fn != x.fn {
		return false
	}
	for _, p := range x.kv {
		k, v, _ := strings.Cut(p, "=")
		if c.kv[k] != v {
			return false
		}
	}
	return true
}

func (x want) String() string { return strings.TrimSpace(x.fn + " " + strings.Join(x.kv, " ")) }

// inOrder checks that the record holds each wanted call, in this order
// (other calls may come between), and returns the index after the last.
func inOrder(t *testing.T, rec []call, from int, wants []want) int {
	t.Helper()
	i := from
	for _, x := range wants {
		j := i
		for j < len(rec) && !x.match(rec[j]) {
			j++
		}
		if j == len(rec) {
			var near []string
			for k := i; k < len(rec) && k < i+6; k++ {
				near = append(near, rec[k].line)
			}
			t.Fatalf("the record lacks %q after line %d; from there:\n%s", x, i+1, strings.Join(near, "\n"))
		}
		i = j + 1
	}
	return i
}

func hex(p uint64) string { return fmt.Sprintf("0x%x", p) }

// launchArgs are arguments of the right types for k, each one telling:
// pointer parameter i is buf from float 4·i on (8-byte aligned for a
// double*), int i is 100+i, float i is i+0.25. It returns them and what
// the record must show.
func launchArgs(k KernelInfo, buf DevMem) ([]any, string) {
	var args []any
	var shown []string
	for i, p := range k.Params {
		switch p.Kind {
		case ArgF32Ptr, ArgF64Ptr:
			m := buf.At(4 * i).(DevMem)
			args = append(args, m)
			shown = append(shown, hex(m.Ptr))
		case ArgInt:
			args = append(args, 100+i)
			shown = append(shown, fmt.Sprint(100+i))
		case ArgFloat:
			args = append(args, float32(i)+0.25)
			shown = append(shown, fmt.Sprint(float32(i)+0.25))
		}
	}
	return args, strings.Join(shown, ",")
}

// TestFakeGPU drives every part of the Device through the bindings against
// the all-success fakes: open (context, stream, cuBLAS handle, NVRTC,
// module, every kernel's function), allocations, copies both ways and
// between buffers, memset, pinned memory, a launch of every kernel with
// arguments of the right types, products in each precision, timing,
// freeing and closing; then checks the record: no violation, and the
// expected calls in order with their arguments intact.
func TestFakeGPU(t *testing.T) {
	_, record := fakeLibs(t)
	ks, err := Kernels()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(0, FP32)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "Fake H200" || d.Arch != "sm_90" || !strings.Contains(d.Log, fmt.Sprintf("fake NVRTC: %d kernels for sm_90", len(ks))) {
		t.Errorf("opened %s, arch %s, NVRTC log %q", d.Name, d.Arch, d.Log)
	}
	if ma, mi := d.NVRTCVersion(); ma != 13 || mi != 0 {
		t.Errorf("NVRTC %d.%d", ma, mi)
	}

	// memory: allocations, copies round-trip through the fake's shadow
	a, err := d.Alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := d.Alloc(0) // at least one float
	if err != nil {
		t.Fatal(err)
	}
	if a.Ptr == b.Ptr || b.Ptr == tiny.Ptr || a.Ptr%256 != 0 || a.N != 1000 {
		t.Errorf("allocations %+v %+v %+v", a, b, tiny)
	}
	src := make([]float32, 1000)
	for i := range src {
		src[i] = float32(i) + 0.5
	}
	if err := d.Upload(a, src); err != nil {
		t.Fatal(err)
	}
	if err := d.Upload(b.At(600), src[:400]); err != nil {
		t.Fatal(err)
	}
	if err := d.Zero(a.At(990), 10); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 1000)
	if err := d.Download(got, a); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		want := src[i]
		if i >= 990 {
			want = 0
		}
		if got[i] != want {
			t.Fatalf("download [%d] = %g, want %g", i, got[i], want)
		}
	}
	if err := d.Download(got[:400], b.At(600)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got[:400], src[:400]) {
		t.Error("the offset upload did not round-trip")
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	host, err := d.AllocHost(64)
	if err != nil {
		t.Fatal(err)
	}
	host[63] = 1 // real memory
	if err := d.FreeHost(host); err != nil {
		t.Fatal(err)
	}

	// every kernel once; pointers into b (8-byte aligned offsets)
	grid, block := D1(3), D1(Threads)
	var launches []want
	for _, k := range ks {
		args, shown := launchArgs(k, b)
		if err := d.Launch(k.Name, grid, block, args...); err != nil {
			t.Fatalf("launch %s: %v", k.Name, err)
		}
		launches = append(launches, w("cuLaunchKernel", "kernel="+k.Name, "grid=3,1,1", "block=256,1,1", "shared=0", "args="+shown))
	}

	// products: 4×5×6, two of them, A and B transposed in turn, in each
	// precision (the device's is fp32; the others through the field)
	pa, _ := d.Alloc(48)
	pb, _ := d.Alloc(60)
	pc, _ := d.Alloc(40)
	g := Gemm{M: 4, N: 5, K: 6, Alpha: 1, A: pa, LDA: 4, StrideA: 24, B: pb, LDB: 6, StrideB: 30, Beta: 0, C: pc, LDC: 4, StrideC: 20, Batch: 2}
	if err := d.Gemm(g); err != nil {
		t.Fatal(err)
	}
	gt := g
	gt.TransA, gt.LDA, gt.TransB, gt.LDB, gt.Alpha, gt.Beta = true, 6, true, 5, 0.5, 1
	for _, p := range []Precision{TF32, BF16} {
		d.Precision = p
		if err := d.Gemm(gt); err != nil {
			t.Fatal(err)
		}
	}
	d.Precision = FP32
	gemms := []want{
		w("cublasGemmStridedBatchedEx", "transa=N", "transb=N", "m=4", "n=5", "k=6", "alpha=1", "A="+hex(pa.Ptr), "Atype=0", "lda=4", "strideA=24",
			"B="+hex(pb.Ptr), "ldb=6", "strideB=30", "beta=0", "C="+hex(pc.Ptr), "ldc=4", "strideC=20", "batch=2", "computeType=68", "algo=-1", "rc=0"),
		w("cublasGemmStridedBatchedEx", "transa=T", "transb=T", "m=4", "n=5", "k=6", "alpha=0.5", "lda=6", "ldb=5", "beta=1", "computeType=77"),
		w("cublasGemmStridedBatchedEx", "transa=T", "transb=T", "m=4", "n=5", "k=6", "computeType=75"),
	}

	// timing
	if _, err := d.Time(func() error { return d.Launch("fill_view", D1(1), D1(Threads), a, 1, 1, 1, float32(0)) }); err != nil {
		t.Fatal(err)
	}
	for _, m := range []DevMem{a, b, tiny, pa, pb, pc} {
		if err := d.Free(m); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()

	rec := readRecord(t, record)
	for _, c := range rec {
		if c.fn == "VIOLATION" || c.fn == "FAILED" || c.kv["rc"] != "0" {
			t.Errorf("record: %s", c.line)
		}
	}
	ctx, stream := "", ""
	for _, c := range rec {
		if c.fn == "cuDevicePrimaryCtxRetain" {
			ctx = c.kv["ctx"]
		}
		if c.fn == "cuStreamCreate" {
			stream = c.kv["stream"]
		}
	}
	open := []want{
		w("cuInit", "flags=0"),
		w("cuDeviceGet", "ordinal=0"),
		w("cuDevicePrimaryCtxRetain", "dev=0"),
		w("cuCtxSetCurrent", "ctx="+ctx),
		w("cuStreamCreate", "flags=1"),
		w("cublasCreate_v2"),
		w("cublasSetStream_v2", "stream="+stream),
		w("cublasSetMathMode", "mode=0"),
		w("nvrtcGetNumSupportedArchs"),
		w("nvrtcGetSupportedArchs"),
		w("nvrtcCreateProgram", "name=tinct_kernels.cu", fmt.Sprintf("src_bytes=%d", len(Source())), fmt.Sprintf("kernels=%d", len(ks))),
		w("nvrtcCompileProgram", "opt0=--gpu-architecture=sm_90", "opt1=--fmad=false", "opt2=--std=c++17", "arch=sm_90"),
		w("nvrtcGetCUBINSize"),
		w("nvrtcGetCUBIN"),
		w("nvrtcDestroyProgram"),
		w("cuModuleLoadData", fmt.Sprintf("kernels=%d", len(ks))),
	}
	for _, k := range ks {
		open = append(open, w("cuModuleGetFunction", "name="+k.Name))
	}
	i := inOrder(t, rec, 0, open)
	i = inOrder(t, rec, i, []want{
		w("cuMemAlloc_v2", "bytesize=4000", "dptr="+hex(a.Ptr)),
		w("cuMemAlloc_v2", "bytesize=4000", "dptr="+hex(b.Ptr)),
		w("cuMemAlloc_v2", "bytesize=4", "dptr="+hex(tiny.Ptr)),
		w("cuMemcpyHtoDAsync_v2", "dst="+hex(a.Ptr), "bytes=4000", "stream="+stream),
		w("cuMemcpyHtoDAsync_v2", "dst="+hex(b.Ptr+2400), "bytes=1600", "stream="+stream),
		w("cuMemsetD32Async", "dst="+hex(a.Ptr+3960), "value=0", "n=10", "stream="+stream),
		w("cuMemcpyDtoHAsync_v2", "src="+hex(a.Ptr), "bytes=4000", "stream="+stream),
		w("cuStreamSynchronize", "stream="+stream),
		w("cuMemcpyDtoHAsync_v2", "src="+hex(b.Ptr+2400), "bytes=1600"),
		w("cuStreamSynchronize", "stream="+stream),
		w("cuMemHostAlloc", "bytesize=256", "flags=1"),
		w("cuMemFreeHost"),
	})
	for j := range launches {
		launches[j].kv = append(launches[j].kv, "stream="+stream)
	}
	i = inOrder(t, rec, i, launches)
	i = inOrder(t, rec, i, gemms)
	i = inOrder(t, rec, i, []want{
		w("cuEventCreate", "flags=0"),
		w("cuEventCreate", "flags=0"),
		w("cuEventRecord", "stream="+stream),
		w("cuLaunchKernel", "kernel=fill_view", "grid=1,1,1", "args="+hex(a.Ptr)+",1,1,1,0"),
		w("cuEventRecord", "stream="+stream),
		w("cuEventSynchronize"),
		w("cuEventElapsedTime_v2"),
		w("cuEventDestroy_v2"),
		w("cuEventDestroy_v2"),
		w("cuMemFree_v2", "dptr="+hex(a.Ptr), "bytes=4000"),
		w("cuMemFree_v2", "dptr="+hex(pc.Ptr), "bytes=160", "live=0"),
		w("cuModuleUnload"),
		w("cublasDestroy_v2"),
		w("cuStreamDestroy_v2", "stream="+stream),
		w("cuDevicePrimaryCtxRelease_v2", "dev=0", "refs=0"),
	})
	if n := len(rec) - i; n != 0 {
		t.Errorf("%d calls after the context's release:\n%s", n, rec[i].line)
	}
}

// TestFakeGPUChecksFail misuses the bindings in each way the fakes check
// and expects each misuse to fail the call, with a VIOLATION line that says
// why: the checks the all-success record relies on can fail.
func TestFakeGPUChecksFail(t *testing.T) {
	_, record := fakeLibs(t)
	d, err := Open(0, FP32)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, _ := d.Alloc(1000)
	b, _ := d.Alloc(1000)
	c, _ := d.Alloc(40)
	buf := make([]float32, 2000)
	type misuse struct {
		what  string
		err   string // in the error tinct returns
		saw   string // in the VIOLATION or FAILED line
		do    func() error
		faked bool // FAILED (injected), not VIOLATION
	}
	direct := func(fn func(*driverAPI) int32, call string) func() error {
		return func() error {
			leave, err := d.enter()
			if err != nil {
				return err
			}
			defer leave()
			return d.drv.check(call, fn(&d.drv.api))
		}
	}
	var fn uintptr
	for _, f := range d.funcs {
		fn = f
		break
	}
	one := uint64(0)
	params := []unsafe.Pointer{unsafe.Pointer(&one)}
	cases := []misuse{
		{"an upload past the end of its allocation", "cuMemcpyHtoDAsync_v2: CUDA_ERROR_INVALID_VALUE", "runs 4000 bytes past the end",
			func() error { return d.Upload(DevMem{Ptr: a.Ptr, N: 2000}, buf) }, false},
		{"a memset reaching into the gap after an allocation", "cuMemsetD32Async: CUDA_ERROR_INVALID_VALUE", "runs 4 bytes past the end",
			func() error { return d.Zero(DevMem{Ptr: a.Ptr, N: 1001}, 1001) }, false},
		{"a download from freed memory", "cuMemcpyDtoHAsync_v2: CUDA_ERROR_INVALID_VALUE", "in the freed allocation",
			func() error {
				if err := d.Free(b); err != nil {
					return err
				}
				return d.Download(buf[:10], b)
			}, false},
		{"a double free", "cuMemFree_v2: CUDA_ERROR_INVALID_VALUE", "freed twice", func() error { return d.Free(b) }, false},
		{"a free of an interior pointer", "cuMemFree_v2: CUDA_ERROR_INVALID_VALUE", "is not the start of an allocation",
			func() error { return d.Free(a.At(1).(DevMem)) }, false},
		{"a kernel pointer into no allocation", "cuLaunchKernel copy_view: CUDA_ERROR_ILLEGAL_ADDRESS", "copy_view parameter 1 (float*): 0x1000 is in no allocation",
			func() error {
				return d.Launch("copy_view", D1(1), D1(Threads), a, DevMem{Ptr: 0x1000, N: 10}, 10, 10, 10, 10)
			}, false},
		{"a double* parameter not 8-byte aligned", "cuLaunchKernel sum_f64: CUDA_ERROR_ILLEGAL_ADDRESS", "is not 8-byte aligned",
			func() error { return d.Launch("sum_f64", D1(1), D1(Threads), a.At(1), c, 4) }, false},
		{"a block of 2048 threads", "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE", "block (2048,1,1) beyond",
			direct(func(api *driverAPI) int32 {
				return api.LaunchKernel(fn, 1, 1, 1, 2048, 1, 1, 0, d.stream, unsafe.Pointer(&params[0]), nil)
			}, "cuLaunchKernel"), false},
		{"an empty grid", "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE", "a zero dimension in grid (0,1,1)",
			direct(func(api *driverAPI) int32 {
				return api.LaunchKernel(fn, 0, 1, 1, 256, 1, 1, 0, d.stream, unsafe.Pointer(&params[0]), nil)
			}, "cuLaunchKernel"), false},
		{"a launch of a made-up function", "cuLaunchKernel: CUDA_ERROR_INVALID_HANDLE", "did not come from cuModuleGetFunction",
			direct(func(api *driverAPI) int32 {
				return api.LaunchKernel(fn+8, 1, 1, 1, 256, 1, 1, 0, d.stream, unsafe.Pointer(&params[0]), nil)
			}, "cuLaunchKernel"), false},
		{"a launch without kernelParams", "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE", "NULL kernelParams",
			direct(func(api *driverAPI) int32 {
				return api.LaunchKernel(fn, 1, 1, 1, 256, 1, 1, 0, d.stream, nil, nil)
			}, "cuLaunchKernel"), false},
		{"a kernel the module lacks", "cuModuleGetFunction: CUDA_ERROR_NOT_FOUND", "the module has no kernel no_such_kernel",
			direct(func(api *driverAPI) int32 {
				var f uintptr
				return api.ModuleGetFunction(&f, d.module, "no_such_kernel")
			}, "cuModuleGetFunction"), false},
		{"an allocation with no current context", "cuMemAlloc_v2: CUDA_ERROR_INVALID_CONTEXT", "no context current on this thread",
			direct(func(api *driverAPI) int32 {
				api.CtxSetCurrent(0)
				var p uint64
				return api.MemAlloc(&p, 4)
			}, "cuMemAlloc_v2"), false},
		{"a product whose C runs past its allocation", "cublasGemmStridedBatchedEx 4x5x6×1: status 7", "C (4×5, ld 100",
			func() error {
				return d.Gemm(Gemm{M: 4, N: 5, K: 6, Alpha: 1, A: a, LDA: 4, B: a, LDB: 6, C: DevMem{Ptr: c.Ptr, N: 1 << 20}, LDC: 100, Batch: 1})
			}, false},
		{"a batch of products writing over each other", "cublasGemmStridedBatchedEx 4x5x6×2: status 7", "the 2 outputs (4×5, ldc 4) overlap",
			func() error {
				return d.Gemm(Gemm{M: 4, N: 5, K: 6, Alpha: 1, A: a, LDA: 4, StrideA: 24, B: a, LDB: 6, StrideB: 30, C: c, LDC: 4, StrideC: 10, Batch: 2})
			}, false},
		{"a launch failing on the device (FAKE_CUDA_FAIL)", "cuLaunchKernel fill_view: CUDA_ERROR_UNKNOWN", "injected by FAKE_CUDA_FAIL",
			func() error {
				t.Setenv("FAKE_CUDA_FAIL", "cuLaunchKernel")
				defer t.Setenv("FAKE_CUDA_FAIL", "")
				return d.Launch("fill_view", D1(1), D1(Threads), a, 1, 1, 1, float32(0))
			}, true},
	}
	for _, m := range cases {
		before := len(readRecord(t, record))
		err := m.do()
		if err == nil || !strings.Contains(err.Error(), m.err) {
			t.Errorf("%s: error %v, want %q", m.what, err, m.err)
		}
		kind := "VIOLATION"
		if m.faked {
			kind = "FAILED"
		}
		var lines []string
		for _, c := range readRecord(t, record)[before:] {
			if c.fn == "VIOLATION" || c.fn == "FAILED" {
				lines = append(lines, c.line)
			}
		}
		if len(lines) != 1 || !strings.HasPrefix(lines[0], kind) || !strings.Contains(lines[0], m.saw) {
			t.Errorf("%s: record %q, want one %s line with %q", m.what, lines, kind, m.saw)
		}
	}
	// the device still works after all that
	if err := d.Upload(a, buf[:1000]); err != nil {
		t.Error(err)
	}
}

// TestFakeDriverDefaultMode: without FAKE_CUDA_OK the fake driver is what
// TestProbeFakeDriver and the CLI's tests expect, a driver whose every call
// beyond Probe's is CUDA_ERROR_NOT_SUPPORTED, so Open stops at the context.
func TestFakeDriverDefaultMode(t *testing.T) {
	fakeLibs(t)
	t.Setenv("FAKE_CUDA_OK", "")
	_, err := Open(0, TF32)
	if err == nil || !strings.Contains(err.Error(), "cuDevicePrimaryCtxRetain: CUDA_ERROR_NOT_SUPPORTED (801: operation not supported)") {
		t.Errorf("Open: %v", err)
	}
}
