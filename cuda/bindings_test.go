package cuda

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// TestBindingsRegister registers every binding against a dummy address:
// purego checks each signature's types and argument count (the cuBLAS
// products pass 18 and 23 arguments, most on the stack) without calling.
func TestBindingsRegister(t *testing.T) {
	for _, api := range []any{&driverAPI{}, &nvrtcAPI{}, &cublasAPI{}} {
		var looked []string
		err := bindWith(api, func(name string) (uintptr, error) {
			looked = append(looked, name)
			return 1, nil
		}, "fake")
		if err != nil {
			t.Fatal(err)
		}
		v := reflect.ValueOf(api).Elem()
		for i := range v.NumField() {
			if v.Field(i).IsNil() {
				t.Errorf("%T.%s not bound", api, v.Type().Field(i).Name)
			}
		}
		if len(looked) != v.NumField() {
			t.Errorf("%T: %d lookups for %d fields", api, len(looked), v.NumField())
		}
	}
}

// TestVersionedSymbols pins the symbols that cuda.h and cublas_api.h
// #define to versioned names: binding the plain name would call the
// legacy ABI (32-bit sizes and pointers).
func TestVersionedSymbols(t *testing.T) {
	syms := map[string]bool{}
	for _, api := range []any{&driverAPI{}, &nvrtcAPI{}, &cublasAPI{}} {
		fs, err := symFields(api)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			syms[f.names[0]] = true
		}
	}
	for _, s := range []string{"cuMemAlloc_v2", "cuMemFree_v2", "cuMemcpyHtoDAsync_v2", "cuMemcpyDtoHAsync_v2", "cuMemcpyDtoDAsync_v2",
		"cuDeviceTotalMem_v2", "cuDevicePrimaryCtxRelease_v2", "cuStreamDestroy_v2", "cuEventDestroy_v2", "cuEventElapsedTime_v2",
		"cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasGetVersion_v2",
		"cuInit", "cuLaunchKernel", "cuModuleLoadData", "cuMemHostAlloc", "cuMemsetD32Async",
		"nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcGetCUBIN", "nvrtcGetPTX", "nvrtcGetProgramLog",
		"cublasSgemmStridedBatched", "cublasGemmStridedBatchedEx", "cublasSetMathMode"} {
		if !syms[s] {
			t.Errorf("%s not bound", s)
		}
	}
	for s := range syms {
		for _, legacy := range []string{"cuMemAlloc", "cuMemFree", "cuCtxCreate", "cuStreamDestroy", "cuEventDestroy", "cublasCreate", "cublasDestroy"} {
			if s == legacy {
				t.Errorf("legacy symbol %s bound", s)
			}
		}
	}
}

func TestBindMissingSymbol(t *testing.T) {
	err := bindWith(&cublasAPI{}, func(name string) (uintptr, error) {
		if name == "cublasGemmStridedBatchedEx" {
			return 0, errors.New("undefined symbol")
		}
		return 1, nil
	}, "libcublas.so.11")
	if err == nil || !strings.Contains(err.Error(), "libcublas.so.11 has no cublasGemmStridedBatchedEx") {
		t.Errorf("got %v", err)
	}
	// alternatives: cuEventElapsedTime_v2 missing falls back to the plain name
	var fell bool
	err = bindWith(&driverAPI{}, func(name string) (uintptr, error) {
		if name == "cuEventElapsedTime_v2" {
			return 0, errors.New("undefined symbol")
		}
		if name == "cuEventElapsedTime" {
			fell = true
		}
		return 1, nil
	}, "libcuda.so.1")
	if err != nil || !fell {
		t.Errorf("fallback: %v, %v", err, fell)
	}
}

func TestGoString(t *testing.T) {
	b := []byte("CUDA_ERROR_NO_DEVICE\x00junk")
	if s := goString(unsafe.SliceData(b)); s != "CUDA_ERROR_NO_DEVICE" {
		t.Errorf("goString = %q", s)
	}
	if goString(nil) != "" {
		t.Error("goString(nil)")
	}
}

func TestPackParams(t *testing.T) {
	vals, err := packParams([]any{DevMem{Ptr: 0x7f0000001000, N: 10}.At(3), -2, float32(1.5), 7})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{0x7f0000001000 + 12, 0xfffffffe, 0x3fc00000, 7}
	for i := range want {
		if vals[i] != want[i] {
			t.Errorf("slot %d = %#x, want %#x", i, vals[i], want[i])
		}
	}
	// a 4-byte value is read at the slot's start: little-endian
	b := (*[8]byte)(unsafe.Pointer(&vals[1]))
	if *(*int32)(unsafe.Pointer(&b[0])) != -2 {
		t.Error("int not at the slot's start")
	}
	if _, err := packParams([]any{memStub{4}}); err == nil {
		t.Error("host memory packed as a device pointer")
	}
	if _, err := packParams([]any{2.5}); err == nil {
		t.Error("float64 packed")
	}
}
