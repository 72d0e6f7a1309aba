package cuda

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
)

// The kernels with the real compilers, without a GPU: NVIDIA's NVRTC
// (libnvrtc.so.12, named by TINCT_NVRTC) and ptxas (TINCT_PTXAS), which
// `make cuda-compilers` fetches from Debian's non-free section
// (scripts/cuda-toolchain.sh) and CI runs on every submission. The
// architectures are the GPUs the project is for: A100 (sm_80) and H100/H200
// (sm_90).
var realArchs = []string{"sm_80", "sm_90"}

// The ptxas gate. 64 registers: at the kernels' 256 threads a block, four
// blocks (half an SM's 2,048 threads on sm_80 and sm_90) still fit in the
// 65,536-register file; the kernels are bound by memory, and a change that
// needs more registers than that costs occupancy for no arithmetic gain. 48
// KB is the most static shared memory a block may have (more must be
// dynamic and opted into, which Launch does not do).
const (
	gateMaxRegisters  = 64
	gateMaxStaticSmem = 48 << 10
)

// TestRealNVRTC compiles Source() with the real NVRTC for sm_80 and sm_90,
// with CompileOptions, through the Device's own nvrtcCompile: the CUBIN must
// hold every kernel under its name (what cuModuleGetFunction looks up), the
// PTX's .entry parameters must have the types Launch packs, and ptxas -v on
// that PTX must report no spills, at most 64 registers and at most 48 KB of
// static shared memory per kernel, the same figures as NVRTC's own ptxas
// reports for the CUBIN. Skipped unless TINCT_NVRTC and TINCT_PTXAS are set
// (make cuda-compilers sets them and fails on a skip).
func TestRealNVRTC(t *testing.T) {
	d, ptxas := realNVRTC(t)
	ma, mi := d.NVRTCVersion()
	sup := realSupportedArchs(t, d)
	t.Logf("NVRTC %d.%d (%s), supported %v; %s", ma, mi, os.Getenv("TINCT_NVRTC"), sup, ptxasVersion(t, ptxas))
	// The architectures Device.compile would pick for an A100 and an H100.
	for _, arch := range realArchs {
		n, _ := strconv.Atoi(strings.TrimPrefix(arch, "sm_"))
		got, err := Arch([2]int{n / 10, n % 10}, sup)
		if err != nil || got != arch {
			t.Errorf("Arch(%d.%d) = %q, %v; want %s", n/10, n%10, got, err, arch)
		}
	}
	ks, err := Kernels()
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range realArchs {
		t.Run(arch, func(t *testing.T) {
			b, err := realBuild(d, ptxas, Source(), ks, arch, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("NVRTC: %s (%d-byte CUBIN, %d-byte PTX)\n%s", b.compiled, b.cubinSize, b.ptxSize, usageTable(b.usage, ks))
			for _, p := range b.problems {
				t.Error(p)
			}
		})
	}
}

// brokenSource breaks each rule once, beside a kernel that keeps them all;
// brokenKernels is what Kernels() would parse from it, with one parameter
// declared wrongly and one kernel that the preprocessor removes.
const brokenSource = `#define N 96
// Keeps every rule.
extern "C" __global__ void tinct_test_ok(float* __restrict__ y, const float* __restrict__ x, int n, float a) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = a * x[i];
}
// N floats stay live across a loop of unknown length: about 2N registers
// (ptxas 12.4: 202), no spills.
extern "C" __global__ void tinct_test_regs(float* __restrict__ y, const float* __restrict__ x, int n) {
    float v[N];
#pragma unroll
    for (int i = 0; i < N; i++) v[i] = x[i * blockDim.x + threadIdx.x];
    for (int it = 0; it < n; it++) {
#pragma unroll
        for (int i = 0; i < N; i++) v[i] = v[i] * v[(i + 1) % N] + 1.0f;
    }
#pragma unroll
    for (int i = 0; i < N; i++) y[i * blockDim.x + threadIdx.x] = v[i];
}
// The same, held to 32 registers (8 blocks of 256 threads an SM): spills.
extern "C" __global__ void __launch_bounds__(256, 8) tinct_test_spill(float* __restrict__ y, const float* __restrict__ x, int n) {
    float v[N];
#pragma unroll
    for (int i = 0; i < N; i++) v[i] = x[i * blockDim.x + threadIdx.x];
    for (int it = 0; it < n; it++) {
#pragma unroll
        for (int i = 0; i < N; i++) v[i] = v[i] * v[(i + 1) % N] + 1.0f;
    }
#pragma unroll
    for (int i = 0; i < N; i++) y[i * blockDim.x + threadIdx.x] = v[i];
}
// 51,200 bytes of static shared memory: ptxas 12.4 compiles it for sm_80
// without a word, though a block may have only 48 KB that is not dynamic.
extern "C" __global__ void tinct_test_smem(float* y) {
    __shared__ float big[12800];
    big[threadIdx.x] = y[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = big[(threadIdx.x + 1) % 12800];
}
// Its second parameter is an int; brokenKernels says float.
extern "C" __global__ void tinct_test_param(float* y, int n) {
    if (threadIdx.x == 0) y[0] = n;
}
// Not extern "C": its entry is mangled, so Launch could not find it by name.
__global__ void tinct_test_mangled(float* y) { y[0] = 1.0f; }
#if 0
extern "C" __global__ void tinct_test_gone(float* y) { y[0] = 1.0f; }
#endif
`

var brokenKernels = []KernelInfo{
	{Name: "tinct_test_ok", Params: []Param{{Name: "y", Kind: ArgF32Ptr}, {Name: "x", Kind: ArgF32Ptr, Const: true}, {Name: "n", Kind: ArgInt}, {Name: "a", Kind: ArgFloat}}},
	{Name: "tinct_test_regs", Params: []Param{{Name: "y", Kind: ArgF32Ptr}, {Name: "x", Kind: ArgF32Ptr, Const: true}, {Name: "n", Kind: ArgInt}}},
	{Name: "tinct_test_spill", Params: []Param{{Name: "y", Kind: ArgF32Ptr}, {Name: "x", Kind: ArgF32Ptr, Const: true}, {Name: "n", Kind: ArgInt}}},
	{Name: "tinct_test_smem", Params: []Param{{Name: "y", Kind: ArgF32Ptr}}},
	{Name: "tinct_test_param", Params: []Param{{Name: "y", Kind: ArgF32Ptr}, {Name: "n", Kind: ArgFloat}}},
	{Name: "tinct_test_gone", Params: []Param{{Name: "y", Kind: ArgF32Ptr}}},
}

// TestRealNVRTCCatchesBrokenKernels runs the checks of TestRealNVRTC on
// brokenSource: each broken kernel must be reported as broken, and nothing
// else (the good kernel in particular).
func TestRealNVRTCCatchesBrokenKernels(t *testing.T) {
	d, ptxas := realNVRTC(t)
	b, err := realBuild(d, ptxas, brokenSource, brokenKernels, "sm_80", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", usageTable(b.usage, brokenKernels))
	want := []string{
		"tinct_test_regs: ptxas: ", // N registers, more than 64
		"tinct_test_spill: ptxas: spill stores",
		"tinct_test_smem: ptxas: 51200 bytes of static shared memory, more than 49152",
		"tinct_test_param: parameter 2 (n) is .u32 in the PTX; Launch packs float as .f32",
		"tinct_test_gone: no .entry in the PTX",
		"tinct_test_gone: not in the CUBIN",
		"tinct_test_gone: ptxas compiled no entry",
		"_Z18tinct_test_mangledPf: .entry in the PTX, but no kernel of that name in the source's signatures",
	}
	for _, w := range want {
		if !slices.ContainsFunc(b.problems, func(p string) bool { return strings.Contains(p, w) }) {
			t.Errorf("no problem reported like %q", w)
		}
	}
	for _, p := range b.problems {
		if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(p, w) }) {
			t.Errorf("unexpected problem: %s", p)
		} else {
			t.Logf("reported, as it should be: %s", p)
		}
	}
	if u := b.usage["tinct_test_regs"]; u == nil || u.Regs <= gateMaxRegisters || u.SpillStores+u.SpillLoads != 0 {
		t.Errorf("tinct_test_regs: %+v, want more than %d registers and no spills (the source no longer tests the register gate alone)", u, gateMaxRegisters)
	}
}

// TestPtxasReport checks the parsing of ptxas -v and the gate on the output
// of ptxas 12.4 (its own, and the lines NVRTC's log gets with
// --ptxas-options=-v), so that the gate's logic is tested on every run, the
// compilers or not.
func TestPtxasReport(t *testing.T) {
	standalone := `ptxas info    : 272 bytes gmem, 16 bytes cmem[4]
ptxas info    : Compiling entry function 'embed' for 'sm_80'
ptxas info    : Function properties for embed
    48 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, 48 bytes cumulative stack size, 392 bytes cmem[0], 32 bytes cmem[2]
ptxas info    : Function properties for __internal_trig_reduction_slowpathd
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'bn_stats' for 'sm_80'
ptxas info    : Function properties for bn_stats
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 36 registers, 2048 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'fat' for 'sm_80'
ptxas info    : Function properties for fat
    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 65 registers, 49156 bytes smem, 380 bytes cmem[0]
`
	nvrtcLog := `ptxas info    : 272 bytes gmem
ptxas info    : Compiling entry function 'bn_stats' for 'sm_90'
ptxas info    : Function properties for bn_stats
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 36 registers, 2048 bytes smem
`
	u, err := parsePtxasV(standalone)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ptxasUsage{
		"embed":                               {Entry: true, Used: true, Regs: 30, Stack: 48},
		"__internal_trig_reduction_slowpathd": {},
		"bn_stats":                            {Entry: true, Used: true, Regs: 36, Smem: 2048},
		"fat":                                 {Entry: true, Used: true, Regs: 65, Smem: 49156, Stack: 8, SpillStores: 12, SpillLoads: 16},
	}
	if len(u) != len(want) {
		t.Errorf("parsed %d functions, want %d: %v", len(u), len(want), u)
	}
	for name, w := range want {
		if g := u[name]; g == nil || *g != w {
			t.Errorf("%s: parsed %+v, want %+v", name, g, w)
		}
	}
	ks := []KernelInfo{{Name: "embed"}, {Name: "bn_stats"}, {Name: "fat"}, {Name: "absent"}}
	got := gateUsage(u, ks)
	for _, w := range []string{
		"fat: ptxas: 65 registers, more than 64",
		"fat: ptxas: 49156 bytes of static shared memory, more than 49152",
		"fat: ptxas: spill stores 12 bytes, spill loads 16 bytes",
		"absent: ptxas compiled no entry",
	} {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, w) }) {
			t.Errorf("gate: no problem like %q in %q", w, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("gate: %d problems, want 4: %q", len(got), got)
	}
	v, err := parsePtxasV(nvrtcLog)
	if err != nil {
		t.Fatal(err)
	}
	if g := v["bn_stats"]; g == nil || *g != want["bn_stats"] {
		t.Errorf("NVRTC's log: bn_stats parsed %+v, want %+v", g, want["bn_stats"])
	}
	if _, err := parsePtxasV("ptxas info    : Used 3 registers\n"); err == nil {
		t.Error("a Used line before any entry parsed")
	}

	ptx := `.visible .entry k(
	.param .u64 k_param_0,
	.param .u32 k_param_1,
	.param .f32 k_param_2
)
{
}
.entry noparams()
{
}
`
	e := ptxEntries(ptx)
	if fmt.Sprint(e["k"]) != "[u64 u32 f32]" || e["noparams"] == nil || len(e["noparams"]) != 0 || len(e) != 2 {
		t.Errorf("ptxEntries = %q", e)
	}
}

// realNVRTC loads the NVRTC named by TINCT_NVRTC through the package's own
// discovery, restricted to its directory as TINCT_CUDA_LIBS_ONLY restricts
// it, preloads its builtins as FindAll does, and binds it into a Device that
// has nothing else (no driver: only the NVRTC methods are used).
func realNVRTC(t *testing.T) (*Device, string) {
	t.Helper()
	path, ptxas := os.Getenv("TINCT_NVRTC"), os.Getenv("TINCT_PTXAS")
	if path == "" || ptxas == "" {
		t.Skip("TINCT_NVRTC (libnvrtc.so.12) and TINCT_PTXAS are unset: the kernels are not compiled with the real NVRTC here; `make cuda-compilers` fetches both from Debian and runs this")
	}
	f := &Finder{Env: filepath.Dir(path)}
	lib, err := f.Find(NVRTCLib)
	if err != nil {
		t.Fatalf("TINCT_NVRTC=%s: %v", path, err)
	}
	want, err1 := os.Stat(path)
	got, err2 := os.Stat(lib.Path)
	if err1 != nil || err2 != nil || !os.SameFile(want, got) {
		t.Fatalf("TINCT_NVRTC=%s, but discovery in its directory loaded %s (%v, %v)", path, lib.Path, err1, err2)
	}
	preloadBuiltins(f, lib)
	d := &Device{}
	if err := bind(&d.rtc, lib.Handle, lib.Path); err != nil {
		t.Fatal(err)
	}
	return d, ptxas
}

func realSupportedArchs(t *testing.T, d *Device) []int {
	t.Helper()
	var n int32
	if err := d.rtcCheck("nvrtcGetNumSupportedArchs", d.rtc.GetNumSupportedArchs(&n)); err != nil || n <= 0 {
		t.Fatalf("nvrtcGetNumSupportedArchs: %d, %v", n, err)
	}
	archs := make([]int32, n)
	if err := d.rtcCheck("nvrtcGetSupportedArchs", d.rtc.GetSupportedArchs(&archs[0])); err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, a := range archs {
		out = append(out, int(a))
	}
	return out
}

func ptxasVersion(t *testing.T, ptxas string) string {
	t.Helper()
	out, err := exec.Command(ptxas, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("TINCT_PTXAS=%s: %v\n%s", ptxas, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Cuda compilation tools, "); ok {
			return "ptxas " + v
		}
	}
	return "ptxas " + strings.TrimSpace(string(out))
}

// realBuildResult is one source compiled for one architecture with the real
// compilers: each function's resources as ptxas reports them, and every
// rule broken.
type realBuildResult struct {
	compiled  string
	cubinSize int
	ptxSize   int
	usage     map[string]*ptxasUsage
	problems  []string
}

// realBuild compiles src for arch (sm_XX) as Device.compile does, then again
// for its PTX, runs ptxas on that, and checks both against ks. The error is
// for a compiler that failed; the rules broken are in problems.
func realBuild(d *Device, ptxas, src string, ks []KernelInfo, arch, dir string) (*realBuildResult, error) {
	r := &realBuildResult{}
	opts := CompileOptions(arch)
	cubin, log, err := d.nvrtcCompile(src, opts)
	if err != nil {
		return nil, fmt.Errorf("NVRTC %s: %w", strings.Join(opts, " "), err)
	}
	r.compiled, r.cubinSize = strings.Join(opts, " "), len(cubin)
	// NVRTC's log is empty when the source compiles cleanly: a warning is a
	// failure, as -Werror makes it for clang (clang_test.go).
	if strings.TrimSpace(log) != "" {
		r.problems = append(r.problems, fmt.Sprintf("NVRTC %s: %s", arch, log))
	}
	r.problems = append(r.problems, cubinKernels(cubin, ks)...)

	// The PTX, and NVRTC's own ptxas report, from a second compile with the
	// same options and -v for the embedded ptxas.
	ptx, vlog, err := nvrtcPTX(d, src, append(opts, "--ptxas-options=-v"))
	if err != nil {
		return nil, fmt.Errorf("NVRTC %s --ptxas-options=-v: %w", strings.Join(opts, " "), err)
	}
	r.ptxSize = len(ptx)
	if !strings.Contains(ptx, ".target "+arch+"\n") {
		r.problems = append(r.problems, fmt.Sprintf("PTX: no .target %s line", arch))
	}
	r.problems = append(r.problems, checkEntries(ptx, ks)...)

	file := filepath.Join(dir, "tinct_kernels_"+arch+".ptx")
	if err := os.WriteFile(file, []byte(ptx), 0o644); err != nil {
		return nil, err
	}
	out, err := exec.Command(ptxas, "-v", "--gpu-name", arch, "-o", filepath.Join(dir, "ptxas_"+arch+".cubin"), file).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -v --gpu-name %s: %v\n%s", ptxas, arch, err, out)
	}
	if r.usage, err = parsePtxasV(string(out)); err != nil {
		return nil, fmt.Errorf("ptxas -v: %w\n%s", err, out)
	}
	r.problems = append(r.problems, gateUsage(r.usage, ks)...)

	// The gate reads ptxas's report on the PTX; the CUBIN that Device loads
	// comes from the ptxas inside NVRTC. They must agree, or the gate does
	// not describe what runs.
	nv, err := parsePtxasV(vlog)
	if err != nil {
		return nil, fmt.Errorf("NVRTC's log with --ptxas-options=-v: %w\n%s", err, vlog)
	}
	for _, k := range ks {
		a, b := r.usage[k.Name], nv[k.Name]
		if a != nil && b != nil && *a != *b {
			r.problems = append(r.problems, fmt.Sprintf("%s: ptxas reports %+v, NVRTC's own ptxas %+v", k.Name, *a, *b))
		}
	}
	return r, nil
}

// nvrtcPTX compiles src with opts as the Device does and returns its PTX
// and NVRTC's log.
func nvrtcPTX(d *Device, src string, opts []string) (string, string, error) {
	ptx, log, err := d.nvrtcRun(src, opts, func(prog uintptr) ([]byte, error) {
		var size uintptr
		if err := d.rtcCheck("nvrtcGetPTXSize", d.rtc.GetPTXSize(prog, &size)); err != nil {
			return nil, err
		}
		if size <= 1 {
			return nil, fmt.Errorf("nvrtcGetPTXSize: %d bytes", size)
		}
		buf := make([]byte, size)
		return buf, d.rtcCheck("nvrtcGetPTX", d.rtc.GetPTX(prog, &buf[0]))
	})
	return strings.TrimRight(string(ptx), "\x00"), log, err
}

// cubinKernels checks that the CUBIN is a CUDA ELF with a code section for
// every kernel: cuModuleGetFunction finds a kernel by that name.
func cubinKernels(cubin []byte, ks []KernelInfo) []string {
	const emCUDA = 190 // EM_CUDA
	// NVIDIA's ELF keeps its own ABI version in e_version (124 from CUDA
	// 12.4's NVRTC), which debug/elf refuses; the rest is standard ELF64.
	// Read a copy that says EV_CURRENT.
	if len(cubin) < 64 {
		return []string{fmt.Sprintf("CUBIN: %d bytes", len(cubin))}
	}
	c := slices.Clone(cubin)
	binary.LittleEndian.PutUint32(c[0x14:], uint32(elf.EV_CURRENT))
	f, err := elf.NewFile(bytes.NewReader(c))
	if err != nil {
		return []string{fmt.Sprintf("CUBIN: not an ELF file: %v", err)}
	}
	if f.Machine != emCUDA {
		return []string{fmt.Sprintf("CUBIN: ELF machine %v, want EM_CUDA (%d)", f.Machine, emCUDA)}
	}
	var out []string
	for _, k := range ks {
		if f.Section(".text."+k.Name) == nil {
			out = append(out, fmt.Sprintf("%s: not in the CUBIN (no .text.%s): cuModuleGetFunction would fail", k.Name, k.Name))
		}
	}
	return out
}

var (
	ptxEntryRE = regexp.MustCompile(`\.entry\s+([\w$]+)\s*\(([^)]*)\)`)
	ptxParamRE = regexp.MustCompile(`\.param\s+\.(\w+)`)
)

// ptxEntries maps each .entry of the PTX to its parameters' types.
func ptxEntries(ptx string) map[string][]string {
	out := map[string][]string{}
	for _, m := range ptxEntryRE.FindAllStringSubmatch(ptx, -1) {
		types := []string{}
		for _, p := range ptxParamRE.FindAllStringSubmatch(m[2], -1) {
			types = append(types, p[1])
		}
		out[m[1]] = types
	}
	return out
}

// ptxTypes are the PTX parameter types that match what Launch packs for
// each kind (packParams): a device pointer fills its 8-byte slot, an int or
// a float takes its first 4 bytes; an int must not be a float, nor the
// reverse, or the bits are read as the other type.
var ptxTypes = map[ArgKind][]string{
	ArgF32Ptr: {"u64"},
	ArgF64Ptr: {"u64"},
	ArgInt:    {"u32", "s32"},
	ArgFloat:  {"f32"},
}

// checkEntries checks the PTX's entries against the kernels' parsed
// signatures, both ways.
func checkEntries(ptx string, ks []KernelInfo) []string {
	entries := ptxEntries(ptx)
	var out []string
	known := map[string]bool{}
	for _, k := range ks {
		known[k.Name] = true
		got, ok := entries[k.Name]
		if !ok {
			out = append(out, fmt.Sprintf("%s: no .entry in the PTX (removed by the preprocessor, or not __global__?)", k.Name))
			continue
		}
		if len(got) != len(k.Params) {
			out = append(out, fmt.Sprintf("%s: %d parameters in the PTX, %d in the source's signature", k.Name, len(got), len(k.Params)))
			continue
		}
		for i, p := range k.Params {
			if !slices.Contains(ptxTypes[p.Kind], got[i]) {
				out = append(out, fmt.Sprintf("%s: parameter %d (%s) is .%s in the PTX; Launch packs %s as .%s",
					k.Name, i+1, p.Name, got[i], p.Kind, strings.Join(ptxTypes[p.Kind], " or .")))
			}
		}
	}
	var extra []string
	for name := range entries {
		if !known[name] {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	for _, name := range extra {
		out = append(out, fmt.Sprintf("%s: .entry in the PTX, but no kernel of that name in the source's signatures (a mangled name: no extern \"C\"?)", name))
	}
	return out
}

// ptxasUsage is what ptxas -v reports for one function: an entry (a
// kernel) or a device function it calls.
type ptxasUsage struct {
	Entry                   bool // compiled as an entry
	Used                    bool // its "Used N registers" line was seen
	Regs, Smem              int  // registers a thread, static shared bytes a block
	Stack                   int  // stack frame, bytes a thread
	SpillStores, SpillLoads int  // bytes
}

var (
	ptxasEntryRE = regexp.MustCompile(`Compiling entry function '([^']+)' for '(\w+)'`)
	ptxasFuncRE  = regexp.MustCompile(`Function properties for (\S+)`)
	ptxasFrameRE = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	ptxasUsedRE  = regexp.MustCompile(`Used (\d+) registers`)
	ptxasSmemRE  = regexp.MustCompile(`(\d+) bytes smem`)
)

// parsePtxasV reads ptxas -v's report (or NVRTC's log with
// --ptxas-options=-v, which prefixes the stack-frame lines). The lines come
// per entry: "Compiling entry function", "Function properties for" it and
// its stack frame and spills, "Used N registers[, N bytes smem]", then the
// properties of each function it calls.
func parsePtxasV(out string) (map[string]*ptxasUsage, error) {
	u := map[string]*ptxasUsage{}
	get := func(name string) *ptxasUsage {
		if u[name] == nil {
			u[name] = &ptxasUsage{}
		}
		return u[name]
	}
	var entry, fn string
	for _, line := range strings.Split(out, "\n") {
		if m := ptxasEntryRE.FindStringSubmatch(line); m != nil {
			entry, fn = m[1], m[1]
			get(entry).Entry = true
			continue
		}
		if m := ptxasFuncRE.FindStringSubmatch(line); m != nil {
			fn = m[1]
			continue
		}
		if m := ptxasFrameRE.FindStringSubmatch(line); m != nil {
			if fn == "" {
				return nil, fmt.Errorf("stack frame line before any function: %q", line)
			}
			f := get(fn)
			// A device function is reported under each entry that calls it.
			f.Stack = max(f.Stack, atoi(m[1]))
			f.SpillStores = max(f.SpillStores, atoi(m[2]))
			f.SpillLoads = max(f.SpillLoads, atoi(m[3]))
			continue
		}
		if m := ptxasUsedRE.FindStringSubmatch(line); m != nil {
			if entry == "" {
				return nil, fmt.Errorf("registers before any entry: %q", line)
			}
			e := get(entry)
			e.Used, e.Regs = true, atoi(m[1])
			if s := ptxasSmemRE.FindStringSubmatch(line); s != nil {
				e.Smem = atoi(s[1])
			}
		}
	}
	return u, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// gateUsage applies the gate: every kernel compiled, at most 64 registers
// and 48 KB of static shared memory, and no spills in it or in a function
// it calls.
func gateUsage(u map[string]*ptxasUsage, ks []KernelInfo) []string {
	var out []string
	for _, k := range ks {
		e := u[k.Name]
		if e == nil || !e.Entry || !e.Used {
			out = append(out, fmt.Sprintf("%s: ptxas compiled no entry of that name", k.Name))
			continue
		}
		if e.Regs > gateMaxRegisters {
			out = append(out, fmt.Sprintf("%s: ptxas: %d registers, more than %d", k.Name, e.Regs, gateMaxRegisters))
		}
		if e.Smem > gateMaxStaticSmem {
			out = append(out, fmt.Sprintf("%s: ptxas: %d bytes of static shared memory, more than %d", k.Name, e.Smem, gateMaxStaticSmem))
		}
	}
	names := make([]string, 0, len(u))
	for name := range u {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if f := u[name]; f.SpillStores > 0 || f.SpillLoads > 0 {
			out = append(out, fmt.Sprintf("%s: ptxas: spill stores %d bytes, spill loads %d bytes", name, f.SpillStores, f.SpillLoads))
		}
	}
	return out
}

// usageTable lists each kernel's resources, most registers first.
func usageTable(u map[string]*ptxasUsage, ks []KernelInfo) string {
	rows := slices.Clone(ks)
	reg := func(k KernelInfo) int {
		if e := u[k.Name]; e != nil {
			return e.Regs
		}
		return -1
	}
	slices.SortStableFunc(rows, func(a, b KernelInfo) int { return reg(b) - reg(a) })
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "kernel\tregisters\tsmem B\tstack B\tspill st/ld B\t")
	for _, k := range rows {
		e := u[k.Name]
		if e == nil {
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\t\n", k.Name)
			continue
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d/%d\t\n", k.Name, e.Regs, e.Smem, e.Stack, e.SpillStores, e.SpillLoads)
	}
	w.Flush()
	return b.String()
}
