// Package nn holds tinct's tensors and layers: float32 NCHW activations,
// explicit forward and backward kernels over buffers allocated once, and the
// backends they run on, loaded at run time with no cgo.
//
// Compute (compute.go) is the seam the network runs through: "go" is
// tinct's own kernels, "onednn" oneDNN's convolution primitives
// (libdnnl.so.2, $TINCT_ONEDNN; Linux) with the kernels for the rest;
// $TINCT_BACKEND or NewCompute names one, and "auto" (the default) takes
// oneDNN's where the library loads.
//
// The kernels' GEMM libraries are oneDNN's sgemm, OpenBLAS (libopenblas,
// $TINCT_OPENBLAS) or pure Go. "auto" picks the first of these that loads;
// $TINCT_GEMM or UseGEMM names one.
package nn
