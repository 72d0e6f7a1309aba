package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"
	"unsafe"
)

// Precision is the arithmetic of the products: fp32, tf32 (the default:
// Hopper's tensor cores on fp32 data, 10-bit mantissas in the product) or
// bf16 (inputs rounded to bfloat16 inside cuBLAS, fp32 accumulation).
type Precision int

const (
	TF32 Precision = iota
	FP32
	BF16
)

// ParsePrecision reads fp32, tf32 or bf16.
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(s) {
	case "tf32", "":
		return TF32, nil
	case "fp32":
		return FP32, nil
	case "bf16":
		return BF16, nil
	}
	return 0, fmt.Errorf("precision %q: one of fp32, tf32, bf16", s)
}

func (p Precision) String() string { return [...]string{"tf32", "fp32", "bf16"}[p] }

func (p Precision) computeType() int32 {
	return [...]int32{cublasCompute32FTF32, cublasCompute32F, cublasCompute32FBF16}[p]
}

// Error is a failed call into one of NVIDIA's libraries.
type Error struct {
	Call string
	Code int32
	Name string // CUDA_ERROR_…, when the driver names it
	Msg  string
}

func (e *Error) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("%s: %s (%d: %s)", e.Call, e.Name, e.Code, e.Msg)
	}
	return fmt.Sprintf("%s: status %d %s", e.Call, e.Code, e.Msg)
}

// Info describes a device.
type Info struct {
	Ordinal       int
	Count         int // devices the driver sees
	Name          string
	CC            [2]int // compute capability
	SMs           int
	MaxThreads    int
	MaxGridX      int
	TotalMem      uint64
	DriverVersion int // e.g. 13000 for CUDA 13.0
	DriverPath    string
}

func (i Info) String() string {
	return fmt.Sprintf("%s (GPU %d of %d, compute capability %d.%d, %d multiprocessors, %.1f GiB, driver CUDA %d.%d, %s)",
		i.Name, i.Ordinal, i.Count, i.CC[0], i.CC[1], i.SMs, float64(i.TotalMem)/(1<<30), i.DriverVersion/1000, i.DriverVersion%1000/10, i.DriverPath)
}

type driver struct{ api driverAPI }

func (d *driver) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	e := &Error{Call: call, Code: r}
	var p *byte
	if d.api.GetErrorName != nil && d.api.GetErrorName(r, &p) == 0 {
		e.Name = goString(p)
	}
	if d.api.GetErrorString != nil && d.api.GetErrorString(r, &p) == 0 {
		e.Msg = goString(p)
	}
	return e
}

func openDriver(f *Finder) (*driver, *Library, error) {
	lib, err := f.Find(DriverLib)
	if err != nil {
		return nil, nil, err
	}
	d := &driver{}
	if err := bind(&d.api, lib.Handle, lib.Path); err != nil {
		return nil, nil, err
	}
	if err := d.check("cuInit", d.api.Init(0)); err != nil {
		return nil, nil, fmt.Errorf("%s loaded from %s, but %w", lib.Path, lib.Via, err)
	}
	return d, lib, nil
}

func (d *driver) info(ordinal int) (Info, error) {
	var in Info
	var n, v int32
	if err := d.check("cuDeviceGetCount", d.api.DeviceGetCount(&n)); err != nil {
		return in, err
	}
	if ordinal < 0 || ordinal >= int(n) {
		return in, fmt.Errorf("GPU %d: the driver sees %d device(s)", ordinal, n)
	}
	var dev int32
	if err := d.check("cuDeviceGet", d.api.DeviceGet(&dev, int32(ordinal))); err != nil {
		return in, err
	}
	name := make([]byte, 256)
	if err := d.check("cuDeviceGetName", d.api.DeviceGetName(&name[0], int32(len(name)), dev)); err != nil {
		return in, err
	}
	in = Info{Ordinal: ordinal, Count: int(n), Name: goString(&name[0])}
	for _, a := range []struct {
		attr int32
		dst  *int
	}{{attrCCMajor, &in.CC[0]}, {attrCCMinor, &in.CC[1]}, {attrMultiprocessors, &in.SMs}, {attrMaxThreadsPerBlock, &in.MaxThreads}, {attrMaxGridDimX, &in.MaxGridX}} {
		if err := d.check("cuDeviceGetAttribute", d.api.DeviceGetAttribute(&v, a.attr, dev)); err != nil {
			return in, err
		}
		*a.dst = int(v)
	}
	var mem uintptr
	if err := d.check("cuDeviceTotalMem_v2", d.api.DeviceTotalMem(&mem, dev)); err != nil {
		return in, err
	}
	in.TotalMem = uint64(mem)
	if err := d.check("cuDriverGetVersion", d.api.DriverGetVersion(&v)); err != nil {
		return in, err
	}
	in.DriverVersion = int(v)
	return in, nil
}

// Probe loads the driver and describes GPU ordinal, without creating a
// context or loading anything else: what the CLI says when it is asked
// for a GPU.
func Probe(ordinal int) (Info, error) {
	d, lib, err := openDriver(DefaultFinder())
	if err != nil {
		return Info{}, err
	}
	in, err := d.info(ordinal)
	in.DriverPath = lib.Path
	return in, err
}

// Device is one GPU with a context, a stream, a cuBLAS handle and the
// kernels compiled for it. Its methods may be called from any goroutine,
// one at a time: each pins its goroutine to an OS thread and makes the
// context current there for the duration.
type Device struct {
	Info
	Libs      *Libraries
	Precision Precision
	Arch      string        // the NVRTC target, e.g. sm_90
	Compiled  time.Duration // NVRTC's time
	Log       string        // NVRTC's log

	drv     *driver
	rtc     nvrtcAPI
	blas    cublasAPI
	dev     int32
	ctx     uintptr
	stream  uintptr
	blasH   uintptr
	module  uintptr
	funcs   map[string]uintptr
	kernels map[string]KernelInfo
}

// Open finds the libraries, creates the device's context, stream and
// cuBLAS handle, and compiles the kernels with NVRTC.
func Open(ordinal int, prec Precision) (*Device, error) {
	f := DefaultFinder()
	drv, dlib, err := openDriver(f)
	if err != nil {
		return nil, err
	}
	in, err := drv.info(ordinal)
	if err != nil {
		return nil, err
	}
	in.DriverPath = dlib.Path
	libs, err := f.FindAll()
	if err != nil {
		return nil, fmt.Errorf("found %s, but: %w", in.Name, err)
	}
	d := &Device{Info: in, Libs: libs, Precision: prec, drv: drv}
	if err := bind(&d.rtc, libs.NVRTC.Handle, libs.NVRTC.Path); err != nil {
		return nil, err
	}
	if err := bind(&d.blas, libs.CUBLAS.Handle, libs.CUBLAS.Path); err != nil {
		return nil, err
	}
	if err := d.init(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.compile(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// enter pins the goroutine to its thread and makes the context current.
func (d *Device) enter() (func(), error) {
	runtime.LockOSThread()
	if err := d.drv.check("cuCtxSetCurrent", d.drv.api.CtxSetCurrent(d.ctx)); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return runtime.UnlockOSThread, nil
}

func (d *Device) init() error {
	a := &d.drv.api
	if err := d.drv.check("cuDeviceGet", a.DeviceGet(&d.dev, int32(d.Ordinal))); err != nil {
		return err
	}
	if err := d.drv.check("cuDevicePrimaryCtxRetain", a.PrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return err
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := d.drv.check("cuStreamCreate", a.StreamCreate(&d.stream, streamNonBlocking)); err != nil {
		return err
	}
	if st := d.blas.Create(&d.blasH); st != 0 {
		return &Error{Call: "cublasCreate_v2", Code: st}
	}
	if st := d.blas.SetStream(d.blasH, d.stream); st != 0 {
		return &Error{Call: "cublasSetStream_v2", Code: st}
	}
	if st := d.blas.SetMathMode(d.blasH, cublasDefaultMath); st != 0 {
		return &Error{Call: "cublasSetMathMode", Code: st}
	}
	return nil
}

// Arch picks the NVRTC target for compute capability cc among the
// architectures NVRTC supports: the highest not above the device's.
func Arch(cc [2]int, supported []int) (string, error) {
	want := cc[0]*10 + cc[1]
	best := -1
	for _, s := range supported {
		if s <= want && s > best {
			best = s
		}
	}
	if best < 0 {
		return "", fmt.Errorf("NVRTC supports %v, none at or below the device's compute capability %d.%d", supported, cc[0], cc[1])
	}
	return fmt.Sprintf("sm_%d", best), nil
}

// CompileOptions are NVRTC's options for arch: no FMA contraction, so that
// the element-wise kernels round as the Go ops do (they are bound by
// memory, not arithmetic).
func CompileOptions(arch string) []string {
	return []string{"--gpu-architecture=" + arch, "--fmad=false", "--std=c++17"}
}

func (d *Device) rtcCheck(call string, r int32) error {
	if r == 0 {
		return nil
	}
	return &Error{Call: call, Code: r, Msg: d.rtc.GetErrorString(r)}
}

// compile builds Source() with NVRTC into a CUBIN for the device and loads
// its kernels.
func (d *Device) compile() error {
	var n int32
	if err := d.rtcCheck("nvrtcGetNumSupportedArchs", d.rtc.GetNumSupportedArchs(&n)); err != nil {
		return err
	}
	archs := make([]int32, max(n, 1))
	if err := d.rtcCheck("nvrtcGetSupportedArchs", d.rtc.GetSupportedArchs(&archs[0])); err != nil {
		return err
	}
	var sup []int
	for _, a := range archs[:n] {
		sup = append(sup, int(a))
	}
	arch, err := Arch(d.CC, sup)
	if err != nil {
		return err
	}
	d.Arch = arch
	start := time.Now()
	image, log, err := d.nvrtcCompile(Source(), CompileOptions(arch))
	d.Compiled, d.Log = time.Since(start), log
	if err != nil {
		return err
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := d.drv.check("cuModuleLoadData", d.drv.api.ModuleLoadData(&d.module, unsafe.Pointer(&image[0]))); err != nil {
		return err
	}
	runtime.KeepAlive(image)
	ks, err := Kernels()
	if err != nil {
		return err
	}
	d.funcs, d.kernels = map[string]uintptr{}, map[string]KernelInfo{}
	for _, k := range ks {
		var f uintptr
		if err := d.drv.check("cuModuleGetFunction "+k.Name, d.drv.api.ModuleGetFunction(&f, d.module, k.Name)); err != nil {
			return err
		}
		d.funcs[k.Name], d.kernels[k.Name] = f, k
	}
	return nil
}

// nvrtcCompile returns the CUBIN of src and NVRTC's log.
func (d *Device) nvrtcCompile(src string, opts []string) ([]byte, string, error) {
	return d.nvrtcRun(src, opts, func(prog uintptr) ([]byte, error) {
		var size uintptr
		if err := d.rtcCheck("nvrtcGetCUBINSize", d.rtc.GetCUBINSize(prog, &size)); err != nil {
			return nil, err
		}
		if size == 0 {
			return nil, errors.New("nvrtcGetCUBINSize: empty CUBIN")
		}
		image := make([]byte, size)
		return image, d.rtcCheck("nvrtcGetCUBIN", d.rtc.GetCUBIN(prog, &image[0]))
	})
}

// nvrtcRun compiles src with opts and returns what output makes of the
// compiled program (its CUBIN; the tests' PTX), with NVRTC's log.
func (d *Device) nvrtcRun(src string, opts []string, output func(prog uintptr) ([]byte, error)) ([]byte, string, error) {
	var prog uintptr
	if err := d.rtcCheck("nvrtcCreateProgram", d.rtc.CreateProgram(&prog, src, "tinct_kernels.cu", 0, nil, nil)); err != nil {
		return nil, "", err
	}
	defer d.rtc.DestroyProgram(&prog)
	cstrs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts))
	for i, o := range opts {
		cstrs[i] = append([]byte(o), 0)
		ptrs[i] = &cstrs[i][0]
	}
	var pin runtime.Pinner
	for _, c := range cstrs {
		pin.Pin(&c[0])
	}
	pin.Pin(&ptrs[0])
	status := d.rtc.CompileProgram(prog, int32(len(ptrs)), unsafe.Pointer(&ptrs[0]))
	pin.Unpin()
	var logSize uintptr
	var log string
	if d.rtc.GetProgramLogSize(prog, &logSize) == 0 && logSize > 1 {
		buf := make([]byte, logSize)
		if d.rtc.GetProgramLog(prog, &buf[0]) == 0 {
			log = strings.TrimRight(string(buf), "\x00\n")
		}
	}
	if err := d.rtcCheck("nvrtcCompileProgram", status); err != nil {
		return nil, log, fmt.Errorf("%w\n%s", err, log)
	}
	out, err := output(prog)
	if err != nil {
		return nil, log, err
	}
	return out, log, nil
}

// NVRTCVersion is the run-time compiler's version.
func (d *Device) NVRTCVersion() (int, int) {
	var ma, mi int32
	d.rtc.Version(&ma, &mi)
	return int(ma), int(mi)
}

// Close releases everything Open created.
func (d *Device) Close() {
	if d.ctx == 0 {
		return
	}
	if leave, err := d.enter(); err == nil {
		if d.module != 0 {
			d.drv.api.ModuleUnload(d.module)
		}
		if d.blasH != 0 {
			d.blas.Destroy(d.blasH)
		}
		if d.stream != 0 {
			d.drv.api.StreamDestroy(d.stream)
		}
		leave()
	}
	d.drv.api.PrimaryCtxRelease(d.dev)
	d.ctx = 0
}

// DevMem is device memory from an offset on.
type DevMem struct {
	Ptr uint64
	N   int // floats
}

func (m DevMem) At(off int) Mem {
	if off < 0 || off > m.N {
		panic(fmt.Sprintf("cuda: offset %d of a buffer of %d floats", off, m.N))
	}
	return DevMem{m.Ptr + 4*uint64(off), m.N - off}
}
func (m DevMem) Len() int { return m.N }

// Alloc allocates n floats (at least one) of device memory.
func (d *Device) Alloc(n int) (DevMem, error) {
	leave, err := d.enter()
	if err != nil {
		return DevMem{}, err
	}
	defer leave()
	var p uint64
	if err := d.drv.check("cuMemAlloc_v2", d.drv.api.MemAlloc(&p, uintptr(4*max(n, 1)))); err != nil {
		return DevMem{}, fmt.Errorf("%d floats: %w", n, err)
	}
	return DevMem{p, n}, nil
}

// Free releases memory from Alloc.
func (d *Device) Free(m DevMem) error {
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return d.drv.check("cuMemFree_v2", d.drv.api.MemFree(m.Ptr))
}

// AllocHost allocates n floats of pinned host memory, for copies that
// overlap with kernels; free them with FreeHost.
func (d *Device) AllocHost(n int) ([]float32, error) {
	leave, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var p unsafe.Pointer
	if err := d.drv.check("cuMemHostAlloc", d.drv.api.MemHostAlloc(&p, uintptr(4*max(n, 1)), memHostAllocPortable)); err != nil {
		return nil, err
	}
	return unsafe.Slice((*float32)(p), n), nil
}

// FreeHost releases memory from AllocHost.
func (d *Device) FreeHost(b []float32) error {
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return d.drv.check("cuMemFreeHost", d.drv.api.MemFreeHost(unsafe.Pointer(unsafe.SliceData(b))))
}

func devMem(m Mem) (DevMem, error) {
	dm, ok := m.(DevMem)
	if !ok {
		return DevMem{}, fmt.Errorf("cuda: %T is not device memory", m)
	}
	return dm, nil
}

// Upload copies src into dst on the stream. With pageable src (any Go
// slice) the copy has left src when it returns; with AllocHost memory it
// is asynchronous: src must stay untouched until Sync.
func (d *Device) Upload(dst Mem, src []float32) error {
	dm, err := devMem(dst)
	if err != nil || len(src) == 0 {
		return err
	}
	if dm.N < len(src) {
		return fmt.Errorf("cuda: upload of %d floats into %d", len(src), dm.N)
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	err = d.drv.check("cuMemcpyHtoDAsync_v2", d.drv.api.MemcpyHtoDAsync(dm.Ptr, unsafe.Pointer(&src[0]), uintptr(4*len(src)), d.stream))
	runtime.KeepAlive(src)
	return err
}

// Download copies len(dst) floats from src and waits for them.
func (d *Device) Download(dst []float32, src Mem) error {
	dm, err := devMem(src)
	if err != nil || len(dst) == 0 {
		return err
	}
	if dm.N < len(dst) {
		return fmt.Errorf("cuda: download of %d floats from %d", len(dst), dm.N)
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := d.drv.check("cuMemcpyDtoHAsync_v2", d.drv.api.MemcpyDtoHAsync(unsafe.Pointer(&dst[0]), dm.Ptr, uintptr(4*len(dst)), d.stream)); err != nil {
		return err
	}
	err = d.drv.check("cuStreamSynchronize", d.drv.api.StreamSynchronize(d.stream))
	runtime.KeepAlive(dst)
	return err
}

// Zero sets n floats of m to 0 on the stream.
func (d *Device) Zero(m Mem, n int) error {
	dm, err := devMem(m)
	if err != nil || n == 0 {
		return err
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return d.drv.check("cuMemsetD32Async", d.drv.api.MemsetD32Async(dm.Ptr, 0, uintptr(min(n, dm.N)), d.stream))
}

// Sync waits for the stream.
func (d *Device) Sync() error {
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return d.drv.check("cuStreamSynchronize", d.drv.api.StreamSynchronize(d.stream))
}

// SMs is the multiprocessor count.
func (d *Device) SMs() int { return d.Info.SMs }

// Launch runs a kernel on the stream. args are Mem (device memory), int
// or float32, checked against the kernel's parsed signature.
func (d *Device) Launch(kernel string, grid, block Dim3, args ...any) error {
	f, ok := d.funcs[kernel]
	if !ok {
		return fmt.Errorf("cuda: no kernel %q loaded", kernel)
	}
	if err := CheckArgs(d.kernels[kernel], args); err != nil {
		return err
	}
	if grid.Count() == 0 {
		return nil
	}
	if err := CheckLimits(grid, block, d.MaxThreads, d.MaxGridX); err != nil {
		return fmt.Errorf("%s: %w", kernel, err)
	}
	vals, err := packParams(args)
	if err != nil {
		return err
	}
	ptrs := make([]unsafe.Pointer, len(args))
	var pin runtime.Pinner
	defer pin.Unpin()
	for i := range vals {
		pin.Pin(&vals[i])
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	var params unsafe.Pointer
	if len(ptrs) > 0 {
		pin.Pin(&ptrs[0])
		params = unsafe.Pointer(&ptrs[0])
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	r := d.drv.api.LaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, 0, d.stream, params, nil)
	return d.drv.check("cuLaunchKernel "+kernel, r)
}

// packParams lays out a launch's arguments for cuLaunchKernel's
// kernelParams (an array of pointers to each value): every value in its own
// 8-byte slot, little-endian, so a 4-byte int or float is at the slot's
// start and a device pointer fills it.
func packParams(args []any) ([]uint64, error) {
	vals := make([]uint64, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case Mem:
			dm, err := devMem(v)
			if err != nil {
				return nil, err
			}
			vals[i] = dm.Ptr
		case int:
			vals[i] = uint64(uint32(int32(v)))
		case float32:
			vals[i] = uint64(math.Float32bits(v))
		default:
			return nil, fmt.Errorf("cuda: kernel argument %d: %T", i, a)
		}
	}
	return vals, nil
}

// Gemm runs the product with cuBLAS in the device's precision.
func (d *Device) Gemm(g Gemm) error {
	if err := g.Validate(); err != nil {
		return err
	}
	a, err := devMem(g.A)
	if err != nil {
		return err
	}
	b, err := devMem(g.B)
	if err != nil {
		return err
	}
	c, err := devMem(g.C)
	if err != nil {
		return err
	}
	if g.Batch == 0 || g.M == 0 || g.N == 0 {
		return nil
	}
	op := func(t bool) int32 {
		if t {
			return cublasOpT
		}
		return cublasOpN
	}
	alpha, beta := g.Alpha, g.Beta
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	st := d.blas.GemmStridedBatchedEx(d.blasH, op(g.TransA), op(g.TransB), int32(g.M), int32(g.N), int32(g.K),
		unsafe.Pointer(&alpha), a.Ptr, cudaR32F, int32(g.LDA), int64(g.StrideA),
		b.Ptr, cudaR32F, int32(g.LDB), int64(g.StrideB),
		unsafe.Pointer(&beta), c.Ptr, cudaR32F, int32(g.LDC), int64(g.StrideC),
		int32(g.Batch), d.Precision.computeType(), cublasGemmDefault)
	runtime.KeepAlive(&alpha)
	runtime.KeepAlive(&beta)
	if st != 0 {
		return &Error{Call: fmt.Sprintf("cublasGemmStridedBatchedEx %dx%dx%d×%d", g.M, g.N, g.K, g.Batch), Code: st}
	}
	return nil
}

// Time runs fn between two events on the stream and returns the GPU time.
func (d *Device) Time(fn func() error) (time.Duration, error) {
	leave, err := d.enter()
	if err != nil {
		return 0, err
	}
	a := &d.drv.api
	var start, end uintptr
	if err := d.drv.check("cuEventCreate", a.EventCreate(&start, eventDefault)); err != nil {
		leave()
		return 0, err
	}
	defer a.EventDestroy(start)
	if err := d.drv.check("cuEventCreate", a.EventCreate(&end, eventDefault)); err != nil {
		leave()
		return 0, err
	}
	defer a.EventDestroy(end)
	err = d.drv.check("cuEventRecord", a.EventRecord(start, d.stream))
	leave()
	if err != nil {
		return 0, err
	}
	if err := fn(); err != nil {
		return 0, err
	}
	leave, err = d.enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	if err := d.drv.check("cuEventRecord", a.EventRecord(end, d.stream)); err != nil {
		return 0, err
	}
	if err := d.drv.check("cuEventSynchronize", a.EventSynchronize(end)); err != nil {
		return 0, err
	}
	var ms float32
	if err := d.drv.check("cuEventElapsedTime", a.EventElapsedTime(&ms, start, end)); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}
