// Package nn holds tinct's tensors and layers: float32 NCHW activations,
// explicit forward and backward kernels over buffers allocated once, and the
// GEMM backends they run on (OpenBLAS loaded at run time, or pure Go).
package nn
