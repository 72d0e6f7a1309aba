package nn

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Bindings for the part of oneDNN 2.6's C API (oneapi/dnnl/dnnl.h) that the
// oneDNN compute backend uses, loaded with purego: no cgo, no headers at
// build time. Descriptors are passed by pointer only, so Go needs just their
// sizes; memory descriptors are filled and read by the library
// (dnnl_memory_desc_init_by_strides, dnnl_primitive_desc_query_md) and never
// interpreted here beyond equality.

// dnnlMD is a dnnl_memory_desc_t: 696 bytes in oneDNN 2.x (checked against
// sizeof in dnnl_types.h when these bindings were written; dnnlVersion
// refuses other major versions).
type dnnlMD [87]uint64

// dnnlOpDesc holds any operation descriptor (convolution, batch
// normalization, …); the largest used, dnnl_convolution_desc_t, is 5976
// bytes in 2.6.
type dnnlOpDesc [6144 / 8]uint64

type dnnlDims [12]int64

type dnnlExecArg struct {
	arg int32
	_   int32
	mem uintptr
}

// Constants from dnnl_types.h (oneDNN 2.6).
const (
	dnnlSuccess = 0

	dnnlF32 = 3

	dnnlTagAny = 1
	dnnlTagA   = 2 // dnnl_x: a bias
	// dnnl_oihw/dnnl_nchw (abcd) = 5, dnnl_nChw16c = 69
	dnnlTagABCD    = 5
	dnnlTagNChw16c = 69
	dnnlTagNChw8c  = 93

	dnnlForwardTraining  = 64
	dnnlForwardInference = 96
	dnnlBackwardData     = 160
	dnnlBackwardWeights  = 192
	dnnlBackward         = 128

	dnnlConvolutionDirect   = 1
	dnnlConvolutionWinograd = 2
	dnnlEltwiseSwish        = 223

	dnnlArgSrc         = 1
	dnnlArgDst         = 17
	dnnlArgWeights     = 33
	dnnlArgBias        = 41
	dnnlArgMean        = 49
	dnnlArgVariance    = 50
	dnnlArgDiffSrc     = 129
	dnnlArgDiffDst     = 145
	dnnlArgDiffWeights = 161
	dnnlArgDiffBias    = 169
	dnnlArgScratchpad  = 80

	dnnlQueryImplInfoStr   = 8
	dnnlQuerySrcMD         = 129
	dnnlQueryDiffSrcMD     = 130
	dnnlQueryWeightsMD     = 131
	dnnlQueryDiffWeightsMD = 132
	dnnlQueryDstMD         = 133
	dnnlQueryDiffDstMD     = 134
	dnnlQueryScratchpadMD  = 136

	dnnlCPU                = 1
	dnnlStreamDefault      = 1
	dnnlScratchpadModeUser = 1
)

type dnnlVersionT struct {
	major, minor, patch int32
	_                   int32
	hash                *byte
	cpuRuntime          uint32
	gpuRuntime          uint32
}

// dnnlAPI is the loaded library: its functions and one CPU engine (each
// Compute instance makes its own stream).
type dnnlAPI struct {
	version         *dnnlVersionT
	engine          uintptr
	ompSetThreads   func(n int32)
	engineCreate    func(engine *uintptr, kind int32, index uintptr) int32
	streamCreate    func(stream *uintptr, engine uintptr, flags uint32) int32
	mdByStrides     func(md *dnnlMD, ndims int32, dims *int64, dt int32, strides *int64) int32
	mdByTag         func(md *dnnlMD, ndims int32, dims *int64, dt int32, tag int32) int32
	mdSize          func(md *dnnlMD) uintptr
	mdEqual         func(a, b *dnnlMD) int32
	convFwdInit     func(d *dnnlOpDesc, prop, alg int32, src, w, b, dst *dnnlMD, strides, padL, padR *int64) int32
	convBwdDataInit func(d *dnnlOpDesc, alg int32, diffSrc, w, diffDst *dnnlMD, strides, padL, padR *int64) int32
	convBwdWInit    func(d *dnnlOpDesc, alg int32, src, diffW, diffB, diffDst *dnnlMD, strides, padL, padR *int64) int32
	pdCreate        func(pd *uintptr, op *dnnlOpDesc, attr, engine, hint uintptr) int32
	pdQueryMD       func(pd uintptr, what, index int32) *dnnlMD
	pdQuery         func(pd uintptr, what, index int32, result unsafe.Pointer) int32
	reorderPD       func(pd *uintptr, src *dnnlMD, srcEngine uintptr, dst *dnnlMD, dstEngine, attr uintptr) int32
	primCreate      func(p *uintptr, pd uintptr) int32
	execute         func(p, stream uintptr, nargs int32, args *dnnlExecArg) int32
	memCreate       func(m *uintptr, md *dnnlMD, engine uintptr, handle unsafe.Pointer) int32
	memSetHandle    func(m uintptr, handle unsafe.Pointer) int32
	attrCreate      func(attr *uintptr) int32
	attrSetPostOps  func(attr, postOps uintptr) int32
	attrScratchpad  func(attr uintptr, mode int32) int32
	postOpsCreate   func(po *uintptr) int32
	postOpsSum      func(po uintptr, scale float32) int32
	postOpsEltwise  func(po uintptr, scale float32, alg int32, alpha, beta float32) int32
	primDestroy     func(p uintptr) int32
	pdDestroy       func(pd uintptr) int32
	memDestroy      func(m uintptr) int32
	streamDestroy   func(s uintptr) int32
	attrDestroy     func(a uintptr) int32
	postOpsDestroy  func(po uintptr) int32
}

var (
	dnnlOnce sync.Once
	dnnlLib  *dnnlAPI
	dnnlErr  error
)

// oneDNNName is the library file the oneDNN backends open ($TINCT_ONEDNN
// names another; tests point it at a missing file to check the fallback).
func oneDNNName() string {
	if p := os.Getenv("TINCT_ONEDNN"); p != "" {
		return p
	}
	return "libdnnl.so.2"
}

// loadDNNL opens oneDNN once per process and creates its CPU engine.
func loadDNNL() (*dnnlAPI, error) {
	dnnlOnce.Do(func() { dnnlLib, dnnlErr = openDNNL(oneDNNName()) })
	return dnnlLib, dnnlErr
}

func openDNNL(name string) (*dnnlAPI, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("oneDNN primitives: only loaded on Linux")
	}
	ompDefaults()
	lib, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w (install Debian's libdnnl2)", name, err)
	}
	d := &dnnlAPI{}
	var version func() *dnnlVersionT
	fns := []struct {
		fn   any
		name string
	}{
		{&version, "dnnl_version"},
		{&d.engineCreate, "dnnl_engine_create"},
		{&d.streamCreate, "dnnl_stream_create"},
		{&d.mdByTag, "dnnl_memory_desc_init_by_tag"},
		{&d.mdByStrides, "dnnl_memory_desc_init_by_strides"},
		{&d.mdSize, "dnnl_memory_desc_get_size"},
		{&d.mdEqual, "dnnl_memory_desc_equal"},
		{&d.convFwdInit, "dnnl_convolution_forward_desc_init"},
		{&d.convBwdDataInit, "dnnl_convolution_backward_data_desc_init"},
		{&d.convBwdWInit, "dnnl_convolution_backward_weights_desc_init"},
		{&d.pdCreate, "dnnl_primitive_desc_create"},
		{&d.pdQueryMD, "dnnl_primitive_desc_query_md"},
		{&d.pdQuery, "dnnl_primitive_desc_query"},
		{&d.reorderPD, "dnnl_reorder_primitive_desc_create"},
		{&d.primCreate, "dnnl_primitive_create"},
		{&d.execute, "dnnl_primitive_execute"},
		{&d.memCreate, "dnnl_memory_create"},
		{&d.memSetHandle, "dnnl_memory_set_data_handle"},
		{&d.attrCreate, "dnnl_primitive_attr_create"},
		{&d.attrSetPostOps, "dnnl_primitive_attr_set_post_ops"},
		{&d.attrScratchpad, "dnnl_primitive_attr_set_scratchpad_mode"},
		{&d.postOpsCreate, "dnnl_post_ops_create"},
		{&d.postOpsSum, "dnnl_post_ops_append_sum"},
		{&d.postOpsEltwise, "dnnl_post_ops_append_eltwise"},
		{&d.primDestroy, "dnnl_primitive_destroy"},
		{&d.pdDestroy, "dnnl_primitive_desc_destroy"},
		{&d.memDestroy, "dnnl_memory_destroy"},
		{&d.streamDestroy, "dnnl_stream_destroy"},
		{&d.attrDestroy, "dnnl_primitive_attr_destroy"},
		{&d.postOpsDestroy, "dnnl_post_ops_destroy"},
	}
	for _, f := range fns {
		if err := register(f.fn, lib, f.name); err != nil {
			return nil, err
		}
	}
	d.version = version()
	if v := d.version; v.major != 2 {
		return nil, fmt.Errorf("%s is oneDNN %d.%d.%d; the primitives' bindings are for 2.x", name, v.major, v.minor, v.patch)
	}
	// libdnnl links libgomp; its omp_set_num_threads sets the team size of
	// the calling thread only.
	if gomp, err := purego.Dlopen("libgomp.so.1", purego.RTLD_NOW|purego.RTLD_GLOBAL); err == nil {
		if err := register(&d.ompSetThreads, gomp, "omp_set_num_threads"); err != nil {
			d.ompSetThreads = nil
		}
	}
	if st := d.engineCreate(&d.engine, dnnlCPU, 0); st != dnnlSuccess {
		return nil, dnnlError("engine_create", st)
	}
	return d, nil
}

// ompDefaults sets libgomp's environment before oneDNN (and with it
// libgomp, which reads it once) is loaded, where the user has not:
//
//   - OMP_NUM_THREADS=1: the GEMM library runs one single-threaded sgemm
//     per goroutine; the primitives ask for Workers() threads on the thread
//     that runs them (dnnlAPI.pin).
//   - OMP_WAIT_POLICY=passive: an idle OpenMP worker sleeps at once instead
//     of spinning, which would take a core from the Go kernels that run
//     between primitives (measured: 64² batch-8 steps 5–10% faster).
func ompDefaults() {
	if os.Getenv("OMP_NUM_THREADS") == "" {
		os.Setenv("OMP_NUM_THREADS", "1")
	}
	if os.Getenv("OMP_WAIT_POLICY") == "" {
		os.Setenv("OMP_WAIT_POLICY", "passive")
	}
}

var dnnlStatus = []string{"success", "out_of_memory", "invalid_arguments", "unimplemented", "iterator_ends", "runtime_error", "not_required"}

func dnnlError(op string, st int32) error {
	s := fmt.Sprint(st)
	if st >= 0 && int(st) < len(dnnlStatus) {
		s = dnnlStatus[st]
	}
	return fmt.Errorf("oneDNN %s: %s", op, s)
}

func (d *dnnlAPI) check(op string, st int32) {
	if st != dnnlSuccess {
		panic("nn: " + dnnlError(op, st).Error())
	}
}

// VersionString is "oneDNN 2.6.3".
func (d *dnnlAPI) VersionString() string {
	return fmt.Sprintf("oneDNN %d.%d.%d", d.version.major, d.version.minor, d.version.patch)
}

// md4 describes an N×C×H×W float32 view of a Tensor: NCHW with the tensor's
// per-image stride (channel-range views of a concatenation are not dense).
func (d *dnnlAPI) md4(n, c, h, w, stride int) dnnlMD {
	var md dnnlMD
	dims := dnnlDims{int64(n), int64(c), int64(h), int64(w)}
	st := dnnlDims{int64(stride), int64(h * w), int64(w), 1}
	d.check("memory_desc_init_by_strides", d.mdByStrides(&md, 4, &dims[0], dnnlF32, &st[0]))
	return md
}

// mdOf describes tensor t: NCHW with its stride, or nChw8c or nChw16c.
func (d *dnnlAPI) mdOf(t Tensor) dnnlMD {
	switch t.Blocked {
	case 0:
		return d.md4(t.N, t.C, t.H, t.W, t.Stride)
	case 8, 16:
		if t.C%t.Blocked != 0 || !t.Contiguous() {
			panic(fmt.Sprintf("nn: nChw%dc tensor %v with stride %d", t.Blocked, t.Shape(), t.Stride))
		}
		tag := int32(dnnlTagNChw16c)
		if t.Blocked == 8 {
			tag = dnnlTagNChw8c
		}
		return d.mdTag(tag, t.N, t.C, t.H, t.W)
	}
	panic(fmt.Sprintf("nn: no oneDNN layout for %d-channel blocks", t.Blocked))
}

// mdTag describes a dense tensor of the given dims in format tag (dnnlTagAny
// lets a primitive choose).
func (d *dnnlAPI) mdTag(tag int32, dims ...int) dnnlMD {
	var md dnnlMD
	var dd dnnlDims
	for i, v := range dims {
		dd[i] = int64(v)
	}
	d.check("memory_desc_init_by_tag", d.mdByTag(&md, int32(len(dims)), &dd[0], dnnlF32, tag))
	return md
}

func (d *dnnlAPI) queryMD(pd uintptr, what int32) dnnlMD {
	p := d.pdQueryMD(pd, what, 0)
	if p == nil {
		return dnnlMD{}
	}
	return *p
}

// implInfo is the implementation oneDNN chose for pd ("jit:avx512_core", …).
func (d *dnnlAPI) implInfo(pd uintptr) string {
	var s *byte
	if d.pdQuery(pd, dnnlQueryImplInfoStr, 0, unsafe.Pointer(&s)) != dnnlSuccess || s == nil {
		return "?"
	}
	var b []byte
	for p := unsafe.Pointer(s); *(*byte)(p) != 0; p = unsafe.Add(p, 1) {
		b = append(b, *(*byte)(p))
	}
	return string(b)
}

func (d *dnnlAPI) same(a, b *dnnlMD) bool { return d.mdEqual(a, b) != 0 }

func (d *dnnlAPI) size(md *dnnlMD) int { return int(d.mdSize(md)) }

// primitive creates the primitive of pd (which it keeps).
func (d *dnnlAPI) primitive(pd uintptr) uintptr {
	var p uintptr
	d.check("primitive_create", d.primCreate(&p, pd))
	return p
}

// memory creates a memory object for md with no data yet; bind sets it.
func (d *dnnlAPI) memory(md *dnnlMD) uintptr {
	var m uintptr
	d.check("memory_create", d.memCreate(&m, md, d.engine, nil))
	return m
}

// attr makes primitive attributes: a user scratchpad (so that the backend
// owns that memory too) and the post-ops post fills, if any. A primitive
// descriptor copies them: destroy them (attrDestroy) once it is made.
func (d *dnnlAPI) attr(post func(po uintptr)) uintptr {
	var a uintptr
	d.check("primitive_attr_create", d.attrCreate(&a))
	d.check("attr_set_scratchpad_mode", d.attrScratchpad(a, dnnlScratchpadModeUser))
	if post != nil {
		var po uintptr
		d.check("post_ops_create", d.postOpsCreate(&po))
		post(po)
		d.check("attr_set_post_ops", d.attrSetPostOps(a, po))
		d.postOpsDestroy(po)
	}
	return a
}

// pin locks the calling goroutine to its OS thread and gives that thread
// an OpenMP team of Workers() threads; unpin undoes the lock. Primitives
// are both created (their kernels size their work split for the team they
// see then) and run between the two.
//
// The thread's asynchronous signals are blocked in between, so that the
// OpenMP threads created from it inherit a mask that keeps Go's signals
// (which they could not handle) off them; see blockSignals.
func (d *dnnlAPI) pin() (mask uint64) {
	runtime.LockOSThread()
	mask = blockSignals()
	if d.ompSetThreads != nil {
		d.ompSetThreads(int32(workers))
	}
	return mask
}

func (d *dnnlAPI) unpin(mask uint64) {
	restoreSignals(mask)
	runtime.UnlockOSThread()
}

// newStream makes a stream: each Compute instance has its own, as oneDNN's
// streams are not for concurrent use.
func (d *dnnlAPI) newStream() uintptr {
	var s uintptr
	d.check("stream_create", d.streamCreate(&s, d.engine, dnnlStreamDefault))
	return s
}

// run executes primitive p with args on stream (a CPU stream runs it on
// the calling OS thread, here with an OpenMP team of Workers() threads)
// and waits for it.
func (d *dnnlAPI) run(stream, p uintptr, args []dnnlExecArg) {
	m := d.pin()
	st := d.execute(p, stream, int32(len(args)), unsafe.SliceData(args))
	d.unpin(m)
	d.check("primitive_execute", st)
}
