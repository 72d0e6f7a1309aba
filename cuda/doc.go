// Package cuda is tinct's CUDA groundwork: it finds NVIDIA's libraries at
// run time (no cgo, no CUDA headers at build time), binds the driver API,
// NVRTC and cuBLAS through purego, carries the project's own kernels as
// CUDA C source embedded in the binary, compiles them with NVRTC for the
// device it finds, and launches them.
//
// What can be checked without a GPU is checked here: library discovery and
// its error messages (find_test.go), the kernels' parsed signatures and
// launch geometry (kernels_test.go, geometry_test.go), and the kernels'
// arithmetic, by compiling the same .cu sources as C++ with a shim that runs
// each grid as loops (package cuda/check). The bindings themselves and the
// Device type have not run on a GPU: scripts/gpu-check.sh and
// `tinct cuda selftest` are prepared for a session that has one
// (docs/gpu.md).
//
// Package cuda/gpunet composes these operations into model.UNet's whole
// training step and inference forward, resident on the device (checked,
// like the kernels, only through the CPU shim).
package cuda
