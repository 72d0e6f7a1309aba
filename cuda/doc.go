// Package cuda is tinct's CUDA groundwork: it finds NVIDIA's libraries at
// run time (no cgo, no CUDA headers at build time), binds the driver API,
// NVRTC and cuBLAS through purego, carries the project's own kernels as
// CUDA C source embedded in the binary, compiles them with NVRTC for the
// device it finds, and launches them.
//
// Compute (compute.go) is the nn.Compute backend built from these
// operations: model.UNet allocates its weights, gradients, statistics and
// activations through it and runs every operation on it, so the network's
// structure is model's alone and runs unchanged on the device.
//
// What can be checked without a GPU is checked here: library discovery and
// its error messages (find_test.go), the kernels' parsed signatures and
// launch geometry (kernels_test.go, geometry_test.go), every operation's
// launches and products at the default network's full sizes on a backend
// that runs nothing (compute_test.go), and the arithmetic, by compiling the
// same .cu sources as C++ (package cuda/shim, a Backend on the CPU): every
// operation against tinct's Go kernels (nn/opcheck, which launches every
// kernel), then the whole network (package cuda/check), and the model's own
// tests with TINCT_BACKEND=cuda-shim. The real NVRTC and ptxas compile
// every kernel for sm_80 and sm_90 (nvrtc_test.go, make cuda-compilers),
// and recording fakes of the driver, NVRTC and cuBLAS check every call a
// Device makes (fake_test.go, make gpu-check-dry). The bindings and the
// Device have not run on a GPU: scripts/gpu-check.sh and `tinct cuda
// selftest` are prepared for a session that has one (docs/gpu.md).
package cuda
