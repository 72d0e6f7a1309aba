package cuda

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The bindings are thin: one Go func per C function, with the C types
// mapped as CUresult/nvrtcResult/cublasStatus_t → int32, CUdevice → int32,
// handles (CUcontext, CUstream, CUmodule, CUfunction, CUevent,
// nvrtcProgram, cublasHandle_t) → uintptr, CUdeviceptr → uint64, size_t →
// uintptr, long long → int64, out-parameters → Go pointers (the callee
// writes them during the call and keeps nothing). Where cuda.h and
// cublas_api.h #define a name to a versioned symbol (cuMemAlloc →
// cuMemAlloc_v2, cublasCreate → cublasCreate_v2 …), the versioned symbol is
// bound. None of this has run on a GPU yet (docs/gpu.md).

// driverAPI is libcuda.so.1.
type driverAPI struct {
	Init               func(flags uint32) int32                                                                                   `sym:"cuInit"`
	DriverGetVersion   func(v *int32) int32                                                                                       `sym:"cuDriverGetVersion"`
	DeviceGetCount     func(n *int32) int32                                                                                       `sym:"cuDeviceGetCount"`
	DeviceGet          func(dev *int32, ordinal int32) int32                                                                      `sym:"cuDeviceGet"`
	DeviceGetAttribute func(v *int32, attr int32, dev int32) int32                                                                `sym:"cuDeviceGetAttribute"`
	DeviceGetName      func(name *byte, n int32, dev int32) int32                                                                 `sym:"cuDeviceGetName"`
	DeviceTotalMem     func(bytes *uintptr, dev int32) int32                                                                      `sym:"cuDeviceTotalMem_v2"`
	PrimaryCtxRetain   func(ctx *uintptr, dev int32) int32                                                                        `sym:"cuDevicePrimaryCtxRetain"`
	PrimaryCtxRelease  func(dev int32) int32                                                                                      `sym:"cuDevicePrimaryCtxRelease_v2"`
	CtxSetCurrent      func(ctx uintptr) int32                                                                                    `sym:"cuCtxSetCurrent"`
	CtxSynchronize     func() int32                                                                                               `sym:"cuCtxSynchronize"`
	StreamCreate       func(s *uintptr, flags uint32) int32                                                                       `sym:"cuStreamCreate"`
	StreamSynchronize  func(s uintptr) int32                                                                                      `sym:"cuStreamSynchronize"`
	StreamDestroy      func(s uintptr) int32                                                                                      `sym:"cuStreamDestroy_v2"`
	MemAlloc           func(p *uint64, bytes uintptr) int32                                                                       `sym:"cuMemAlloc_v2"`
	MemFree            func(p uint64) int32                                                                                       `sym:"cuMemFree_v2"`
	MemHostAlloc       func(pp *unsafe.Pointer, bytes uintptr, flags uint32) int32                                                `sym:"cuMemHostAlloc"`
	MemFreeHost        func(p unsafe.Pointer) int32                                                                               `sym:"cuMemFreeHost"`
	MemcpyHtoDAsync    func(dst uint64, src unsafe.Pointer, bytes uintptr, s uintptr) int32                                       `sym:"cuMemcpyHtoDAsync_v2"`
	MemcpyDtoHAsync    func(dst unsafe.Pointer, src uint64, bytes uintptr, s uintptr) int32                                       `sym:"cuMemcpyDtoHAsync_v2"`
	MemcpyDtoDAsync    func(dst, src uint64, bytes uintptr, s uintptr) int32                                                      `sym:"cuMemcpyDtoDAsync_v2"`
	MemsetD32Async     func(dst uint64, v uint32, n uintptr, s uintptr) int32                                                     `sym:"cuMemsetD32Async"`
	ModuleLoadData     func(m *uintptr, image unsafe.Pointer) int32                                                               `sym:"cuModuleLoadData"`
	ModuleGetFunction  func(f *uintptr, m uintptr, name string) int32                                                             `sym:"cuModuleGetFunction"`
	ModuleUnload       func(m uintptr) int32                                                                                      `sym:"cuModuleUnload"`
	LaunchKernel       func(f uintptr, gx, gy, gz, bx, by, bz, sharedBytes uint32, s uintptr, params, extra unsafe.Pointer) int32 `sym:"cuLaunchKernel"`
	EventCreate        func(e *uintptr, flags uint32) int32                                                                       `sym:"cuEventCreate"`
	EventRecord        func(e, s uintptr) int32                                                                                   `sym:"cuEventRecord"`
	EventSynchronize   func(e uintptr) int32                                                                                      `sym:"cuEventSynchronize"`
	EventElapsedTime   func(ms *float32, start, end uintptr) int32                                                                `sym:"cuEventElapsedTime_v2|cuEventElapsedTime"`
	EventDestroy       func(e uintptr) int32                                                                                      `sym:"cuEventDestroy_v2"`
	GetErrorString     func(r int32, s **byte) int32                                                                              `sym:"cuGetErrorString"`
	GetErrorName       func(r int32, s **byte) int32                                                                              `sym:"cuGetErrorName"`
}

// nvrtcAPI is libnvrtc.so.
type nvrtcAPI struct {
	Version              func(major, minor *int32) int32                                                                     `sym:"nvrtcVersion"`
	GetNumSupportedArchs func(n *int32) int32                                                                                `sym:"nvrtcGetNumSupportedArchs"`
	GetSupportedArchs    func(archs *int32) int32                                                                            `sym:"nvrtcGetSupportedArchs"`
	CreateProgram        func(prog *uintptr, src, name string, numHeaders int32, headers, includeNames unsafe.Pointer) int32 `sym:"nvrtcCreateProgram"`
	CompileProgram       func(prog uintptr, numOptions int32, options unsafe.Pointer) int32                                  `sym:"nvrtcCompileProgram"`
	GetPTXSize           func(prog uintptr, size *uintptr) int32                                                             `sym:"nvrtcGetPTXSize"`
	GetPTX               func(prog uintptr, ptx *byte) int32                                                                 `sym:"nvrtcGetPTX"`
	GetCUBINSize         func(prog uintptr, size *uintptr) int32                                                             `sym:"nvrtcGetCUBINSize"`
	GetCUBIN             func(prog uintptr, cubin *byte) int32                                                               `sym:"nvrtcGetCUBIN"`
	GetProgramLogSize    func(prog uintptr, size *uintptr) int32                                                             `sym:"nvrtcGetProgramLogSize"`
	GetProgramLog        func(prog uintptr, log *byte) int32                                                                 `sym:"nvrtcGetProgramLog"`
	DestroyProgram       func(prog *uintptr) int32                                                                           `sym:"nvrtcDestroyProgram"`
	GetErrorString       func(r int32) string                                                                                `sym:"nvrtcGetErrorString"`
}

// cublasAPI is libcublas.so.
type cublasAPI struct {
	Create      func(h *uintptr) int32            `sym:"cublasCreate_v2"`
	Destroy     func(h uintptr) int32             `sym:"cublasDestroy_v2"`
	SetStream   func(h, s uintptr) int32          `sym:"cublasSetStream_v2"`
	SetMathMode func(h uintptr, mode int32) int32 `sym:"cublasSetMathMode"`
	GetVersion  func(h uintptr, v *int32) int32   `sym:"cublasGetVersion_v2"`
	// cublasSgemmStridedBatched(handle, transa, transb, m, n, k, *alpha,
	// A, lda, strideA, B, ldb, strideB, *beta, C, ldc, strideC, batch)
	SgemmStridedBatched func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uint64, lda int32, strideA int64,
		b uint64, ldb int32, strideB int64, beta *float32, c uint64, ldc int32, strideC int64, batch int32) int32 `sym:"cublasSgemmStridedBatched"`
	// cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha,
	// A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc,
	// strideC, batch, computeType, algo)
	GemmStridedBatchedEx func(h uintptr, ta, tb, m, n, k int32, alpha unsafe.Pointer, a uint64, atype, lda int32, strideA int64,
		b uint64, btype, ldb int32, strideB int64, beta unsafe.Pointer, c uint64, ctype, ldc int32, strideC int64,
		batch, compute, algo int32) int32 `sym:"cublasGemmStridedBatchedEx"`
}

// Constants from cuda.h, cublas_api.h and library_types.h.
const (
	attrMaxThreadsPerBlock = 1  // CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK
	attrMaxGridDimX        = 5  // CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X
	attrMultiprocessors    = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrCCMajor            = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrCCMinor            = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

	streamNonBlocking    = 1 // CU_STREAM_NON_BLOCKING
	eventDefault         = 0 // CU_EVENT_DEFAULT
	memHostAllocPortable = 1 // CU_MEMHOSTALLOC_PORTABLE

	cublasOpN, cublasOpT = 0, 1 // CUBLAS_OP_N, CUBLAS_OP_T
	cublasDefaultMath    = 0    // CUBLAS_DEFAULT_MATH
	cudaR32F             = 0    // CUDA_R_32F
	cublasCompute32F     = 68   // CUBLAS_COMPUTE_32F
	cublasCompute32FBF16 = 75   // CUBLAS_COMPUTE_32F_FAST_16BF
	cublasCompute32FTF32 = 77   // CUBLAS_COMPUTE_32F_FAST_TF32
	cublasGemmDefault    = -1   // CUBLAS_GEMM_DEFAULT
)

// bind fills every func field of api (a pointer to one of the structs
// above) from lib, by the field's sym tag (alternatives separated by |,
// first found wins).
func bind(api any, lib uintptr, libName string) error {
	return bindWith(api, func(name string) (uintptr, error) { return purego.Dlsym(lib, name) }, libName)
}

func bindWith(api any, lookup func(string) (uintptr, error), libName string) error {
	fields, err := symFields(api)
	if err != nil {
		return err
	}
	for _, f := range fields {
		var addr uintptr
		var lastErr error
		for _, name := range f.names {
			if addr, lastErr = lookup(name); lastErr == nil && addr != 0 {
				break
			}
		}
		if addr == 0 {
			return fmt.Errorf("%s has no %s (%v): too old a version?", libName, f.names[0], lastErr)
		}
		purego.RegisterFunc(f.ptr, addr)
	}
	return nil
}

type symField struct {
	names []string
	ptr   any // pointer to the func field
}

func symFields(api any) ([]symField, error) {
	v := reflect.ValueOf(api)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("cuda: bind: %T is not a pointer to a struct", api)
	}
	v = v.Elem()
	var out []symField
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag := f.Tag.Get("sym")
		if tag == "" || f.Type.Kind() != reflect.Func {
			return nil, fmt.Errorf("cuda: bind: field %s has no sym tag or is not a func", f.Name)
		}
		out = append(out, symField{names: strings.Split(tag, "|"), ptr: v.Field(i).Addr().Interface()})
	}
	return out, nil
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	var n int
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
