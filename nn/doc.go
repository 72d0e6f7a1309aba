// Package nn holds tinct's tensors and layers: float32 NCHW activations,
// explicit forward and backward kernels over buffers allocated once, and the
// GEMM backends they run on, loaded at run time with no cgo: oneDNN
// (libdnnl.so.2, $TINCT_ONEDNN; Linux), OpenBLAS (libopenblas, $TINCT_OPENBLAS)
// or pure Go. "auto" picks the first of these that loads; $TINCT_GEMM or
// UseBackend names one.
package nn
