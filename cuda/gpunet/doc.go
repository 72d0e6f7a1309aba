// Package gpunet runs model.UNet's training step and inference forward
// resident on a device, with package cuda's operations: Net holds the
// weights, gradients, BatchNorm running statistics and Adam moments on the
// device, and one arena of activations per batch shape laid out as
// model/arena.go lays out the CPU's (skips written straight into the
// channel ranges of the concatenations, block scratch shared). forward.go
// follows model/forward.go and model/train.go operation for operation.
//
// The host model.UNet passed to New is the host mirror: TrainStep fills
// its Grads (downloaded tail by tail, so an all-reduce can overlap the
// rest of backward) and BatchNorm buffers, Apply and EMA download its
// Params, so that everything that reads the host network (checksums,
// checkpoints, the all-reduce) works unchanged. Upload sends it back
// after the caller replaced it.
//
// # What has run where
//
// Nothing in this package has run on a GPU. It is verified only through
// the CPU shim of package cuda/check (the .cu kernels compiled by g++ and
// run as loops, cuBLAS replaced by cuda.HostGemm): the tests compare the
// forward in both modes, the loss, every gradient, the ready callbacks,
// the BatchNorm buffers and three steps of TrainStep+Apply with the CPU
// model on tiny networks, and a backend that runs nothing checks every
// launch's arguments and every product's operands at DefaultConfig's full
// sizes (TestMemoryPlan). DeviceBackend (the adapter over cuda.Device),
// the device's copies, its stream ordering, cuBLAS's products and the
// speed of any of it are untested; see docs/gpu.md for what of package
// cuda has run. SelfCheck is the comparison prepared for a GPU session.
//
// First cuts: each gradient tail is downloaded with a synchronous copy
// (the device waits while the host copies and calls ready; pinned buffers
// and an event per tail would let backward go on), the batch is uploaded
// from pageable memory, and the products' precision is whatever the
// cuda.Device is set to (SelfCheck's tolerances assume fp32).
package gpunet
