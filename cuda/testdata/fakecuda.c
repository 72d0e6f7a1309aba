// A fake libcuda.so.1 for tests: it answers the calls cuda.Probe makes
// as a driver with one "Fake H200" (compute capability 9.0, 132
// multiprocessors) would, or, with FAKE_CUDA_NODEV set, fails cuInit with
// CUDA_ERROR_NO_DEVICE. Every other symbol the bindings need exists and
// fails with CUDA_ERROR_NOT_SUPPORTED (801) if called.
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>

typedef int CUresult;

CUresult cuInit(unsigned flags) { return getenv("FAKE_CUDA_NODEV") ? 100 : 0; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return 0; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
	switch (attr) {
	case 75: *v = 9; break;            /* compute capability major */
	case 76: *v = 0; break;            /* minor */
	case 16: *v = 132; break;          /* multiprocessors */
	case 1: *v = 1024; break;          /* max threads per block */
	case 5: *v = 2147483647; break;    /* max grid x */
	default: *v = 0;
	}
	return 0;
}
CUresult cuDeviceGetName(char *name, int len, int dev) { snprintf(name, len, "Fake H200"); return 0; }
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) { *bytes = (size_t)141 << 30; return 0; }
CUresult cuGetErrorName(CUresult r, const char **s) { *s = r == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_NOT_SUPPORTED"; return 0; }
CUresult cuGetErrorString(CUresult r, const char **s) { *s = r == 100 ? "no CUDA-capable device is detected" : "operation not supported"; return 0; }

CUresult cuDevicePrimaryCtxRetain(void) { return 801; }
CUresult cuDevicePrimaryCtxRelease_v2(void) { return 801; }
CUresult cuCtxSetCurrent(void) { return 801; }
CUresult cuCtxSynchronize(void) { return 801; }
CUresult cuStreamCreate(void) { return 801; }
CUresult cuStreamSynchronize(void) { return 801; }
CUresult cuStreamDestroy_v2(void) { return 801; }
CUresult cuMemAlloc_v2(void) { return 801; }
CUresult cuMemFree_v2(void) { return 801; }
CUresult cuMemHostAlloc(void) { return 801; }
CUresult cuMemFreeHost(void) { return 801; }
CUresult cuMemcpyHtoDAsync_v2(void) { return 801; }
CUresult cuMemcpyDtoHAsync_v2(void) { return 801; }
CUresult cuMemcpyDtoDAsync_v2(void) { return 801; }
CUresult cuMemsetD32Async(void) { return 801; }
CUresult cuModuleLoadData(void) { return 801; }
CUresult cuModuleGetFunction(void) { return 801; }
CUresult cuModuleUnload(void) { return 801; }
CUresult cuLaunchKernel(void) { return 801; }
CUresult cuEventCreate(void) { return 801; }
CUresult cuEventRecord(void) { return 801; }
CUresult cuEventSynchronize(void) { return 801; }
CUresult cuEventElapsedTime_v2(void) { return 801; }
CUresult cuEventDestroy_v2(void) { return 801; }
