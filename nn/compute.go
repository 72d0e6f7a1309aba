package nn

import (
	"fmt"
	"hash"
	"log/slog"
	"os"
	"strings"
	"sync"
)

var warnOnce sync.Once

// Compute is the seam between the network and the code that runs its
// operations: the one place that says where the arithmetic runs. A network
// (model.UNet) and its arenas allocate every tensor and vector through one
// instance and route every operation of a forward pass, backward pass,
// loss, optimizer step, EMA and checksum through it. The layers (Conv2D,
// BatchNorm) hold views of the network's parameters and statistics; the
// Compute decides how and where the arithmetic happens.
//
// Host backends (go, onednn) compute on host memory: their tensors hold
// Data, and any host instance may run on any host network. A device
// backend (package cuda) allocates its tensors and vectors in device
// memory (Mem) and keeps them there: values cross to the host only through
// Upload, Download, MSE's loss and Hash, at the edges of a step (the batch
// in; the loss, the gradient for the all-reduce, checksums and checkpoints
// out).
//
// Shapes are those of the Tensors (NCHW views, possibly channel ranges of a
// wider tensor). "accumulate" means add into the destination instead of
// overwriting it; gradients of parameters are always added (the caller
// clears them once per step).
//
// An instance serves one caller at a time and keeps whatever it needs
// between calls (scratch, primitives created once per shape), so a training
// loop allocates nothing after its first step. Operations report no
// errors: a device's failure (out of memory, a failed launch) is kept as
// Err, checked at the edges, and makes every later operation do nothing.
type Compute interface {
	// Name says which backend runs, for logs and `tinct version`.
	Name() string

	// Device says whether the backend's tensors live in device memory
	// (Mem) rather than on the host (Data).
	Device() bool
	// NewTensor and NewVec allocate zeroed memory where the backend
	// computes; Upload and Download copy between it and the host (len(src)
	// or len(dst) values; host backends skip a copy onto itself).
	NewTensor(n, c, h, w int) Tensor
	NewVec(n int) Vec
	Upload(dst Vec, src []float32)
	Download(dst []float32, src Vec)
	// Err is the first failure of any operation so far (nil on host
	// backends, which panic on misuse instead).
	Err() error
	// Release frees tensors NewTensor made before Close (a device arena
	// whose network lives on); host backends leave them to the collector.
	Release(ts ...Tensor)
	// Close frees the memory the instance allocated and its scratch; its
	// tensors and vectors must not be used after.
	Close()

	// Copy: dst = src. Zero: t = 0. CopyVec, ZeroVec: the same on vectors.
	Copy(src, dst Tensor)
	Zero(t Tensor)
	CopyVec(src, dst Vec)
	ZeroVec(v Vec)
	// Embed writes the sinusoidal embedding of each image's noise variance
	// as constant planes: out[n, k] = sin(float32(noiseVar[n]·speeds[k])),
	// out[n, K+k] the cosine (K = len(speeds); host values, the batch's
	// edge).
	Embed(noiseVar, speeds []float32, out Tensor)

	// ConvForward: y[N,Out,H,W] (+)= conv(x[N,In,H,W]; c.Weight) + c.Bias.
	ConvForward(c *Conv2D, x, y Tensor, accumulate bool)
	// ConvSiLUForward: y = silu(conv(x; c.Weight) + c.Bias), for inference:
	// nothing is kept for a backward pass, so a backend may fuse the two.
	ConvSiLUForward(c *Conv2D, x, y Tensor)
	// ConvBackward: c.GradW, c.GradB += ∂/∂W, ∂/∂b from x and dy[N,Out,H,W];
	// dx[N,In,H,W] (+)= the input gradient when dx has data.
	ConvBackward(c *Conv2D, x, dy, dx Tensor, accumulate bool)

	// BatchNormForward: y = (x − μ)/σ per channel (batch statistics recorded
	// in bn when train, running statistics otherwise).
	BatchNormForward(bn *BatchNorm, x, y Tensor, train bool)
	// BatchNormApply recomputes y from x with the last Forward's statistics.
	BatchNormApply(bn *BatchNorm, x, y Tensor)
	// BatchNormBackward: dx (+)= ∂/∂x given x and dy (training statistics).
	BatchNormBackward(bn *BatchNorm, x, dy, dx Tensor, accumulate bool)

	// SiLUForwardSave: y = x·σ(x), x overwritten with σ(x).
	SiLUForwardSave(x, y Tensor)
	// SiLUBackwardSaved: dx = dy·(σ + y·(1−σ)); dx may alias dy.
	SiLUBackwardSaved(sig, y, dy, dx Tensor)

	// AvgPool2Forward: y[N,C,H/2,W/2] = 2×2 mean of x. Backward adds.
	AvgPool2Forward(x, y Tensor)
	AvgPool2Backward(dy, dx Tensor)
	// Upsample2Forward: y[N,C,2H,2W] = bilinear ×2 of x. Backward adds.
	Upsample2Forward(x, y Tensor)
	Upsample2Backward(dy, dx Tensor)

	// Add: dst += src.
	Add(src, dst Tensor)
	// MSE returns mean((pred−target)²) and sets grad = 2(pred−target)/count
	// · scale (the share's weight in the batch's mean) when grad has
	// memory.
	MSE(pred, target, grad Tensor, scale float32) float32

	// Adam is one step of model.Adam over p with gradients g and moments
	// m, v (nn.AdamStep). EMA: avg = decay·avg + (1−decay)·live.
	Adam(p, g, m, v Vec, s AdamConsts)
	EMA(avg, live Vec, decay float32)
	// Hash writes v's values to h as little-endian float32 bytes (the
	// replicas' checksum).
	Hash(h hash.Hash, v Vec)

	// Bytes is the memory the instance holds (scratch, internal layouts).
	Bytes() int

	// ActivationBlock is the channel blocking (Tensor.Blocked) the backend
	// wants for a tensor of c channels that only its convolutions and the
	// element-wise SiLU touch (a block's inner activations), 0 for NCHW.
	ActivationBlock(c int) int
}

// kernels is the reference backend: tinct's own kernels in Go (im2col plus
// the active GEMM library for convolutions). Every other backend is checked
// against it op by op.
type kernels struct{ ws Workspace }

// NewKernels returns an instance of the reference backend.
func NewKernels() Compute { return &kernels{} }

func (k *kernels) Name() string {
	return "go (tinct's kernels; gemm: " + ActiveGEMM().Name() + ")"
}
func (k *kernels) ConvForward(c *Conv2D, x, y Tensor, acc bool) { c.Forward(&k.ws, x, y, acc) }
func (k *kernels) ConvSiLUForward(c *Conv2D, x, y Tensor) {
	c.Forward(&k.ws, x, y, false)
	siluInPlace(y)
}
func (k *kernels) ConvBackward(c *Conv2D, x, dy, dx Tensor, acc bool) {
	c.Backward(&k.ws, x, dy, dx, acc)
}
func (k *kernels) BatchNormForward(bn *BatchNorm, x, y Tensor, train bool) { bn.Forward(x, y, train) }
func (k *kernels) BatchNormApply(bn *BatchNorm, x, y Tensor)               { bn.Apply(x, y) }
func (k *kernels) BatchNormBackward(bn *BatchNorm, x, dy, dx Tensor, acc bool) {
	bn.BackwardTo(x, dy, dx, acc)
}
func (k *kernels) SiLUForwardSave(x, y Tensor)             { SiLUForwardSave(x, y) }
func (k *kernels) SiLUBackwardSaved(sig, y, dy, dx Tensor) { SiLUBackwardSaved(sig, y, dy, dx) }
func (k *kernels) AvgPool2Forward(x, y Tensor)             { AvgPool2Forward(x, y) }
func (k *kernels) AvgPool2Backward(dy, dx Tensor)          { AvgPool2Backward(dy, dx) }
func (k *kernels) Upsample2Forward(x, y Tensor)            { Upsample2Forward(x, y) }
func (k *kernels) Upsample2Backward(dy, dx Tensor)         { Upsample2Backward(dy, dx) }
func (k *kernels) Add(src, dst Tensor)                     { AddTo(src, dst) }
func (k *kernels) MSE(pred, target, grad Tensor, scale float32) float32 {
	return mseScaled(pred, target, grad, scale)
}
func (k *kernels) Bytes() int              { return k.ws.Bytes() }
func (k *kernels) ActivationBlock(int) int { return 0 }

// ComputeNames lists the backends NewCompute accepts.
func ComputeNames() []string {
	names := []string{"auto", "go", "onednn"}
	for _, r := range registered {
		names = append(names, r.name)
	}
	return names
}

// registered are the backends other packages add (package cuda/shim: the
// CUDA backend on the CPU through g++, for tests).
var registered []computeRegistration

type computeRegistration struct {
	name string
	open func() (Compute, error)
}

// RegisterCompute makes NewCompute(name) call open, for a device backend
// in a package that cannot be imported here (package cuda builds on this
// one).
func RegisterCompute(name string, open func() (Compute, error)) {
	registered = append(registered, computeRegistration{name, open})
}

// NewCompute returns a new instance of the named backend: "go" (the
// reference kernels), "onednn" (oneDNN's primitives) or "auto" (oneDNN's
// where the library loads, else the kernels: the faster one, measured in
// docs/benchmarks.md). An empty name means $TINCT_BACKEND, and "auto" when
// that is unset. When "onednn" is asked for and oneDNN cannot be loaded the
// instance is the "go" backend and the error says why (callers log it and
// go on: the binary works without oneDNN); "auto" falls back without one
// (OneDNNError says why).
func NewCompute(name string) (Compute, error) { return newComputeWith(name, loadDNNL) }

// ComputeChoice is the backend name NewCompute("") goes by: $TINCT_BACKEND,
// or "auto" when that is unset.
func ComputeChoice() string {
	if name := os.Getenv("TINCT_BACKEND"); name != "" {
		return name
	}
	return "auto"
}

func newComputeWith(name string, load func() (*dnnlAPI, error)) (Compute, error) {
	if name == "" {
		name = ComputeChoice()
	}
	switch name {
	case "go":
		return NewKernels(), nil
	case "auto", "onednn":
		d, err := load()
		if err == nil {
			return newOneDNN(d), nil
		}
		if name != "onednn" {
			return NewKernels(), nil
		}
		return NewKernels(), fmt.Errorf("compute backend onednn unavailable, using go: %w", err)
	}
	for _, r := range registered {
		if r.name == name {
			return r.open()
		}
	}
	return nil, fmt.Errorf("unknown compute backend %q (choices: %s)", name, strings.Join(ComputeNames(), ", "))
}

// OneDNNError is why oneDNN's primitives cannot be used here (nil: they
// can).
func OneDNNError() error {
	_, err := loadDNNL()
	return err
}

// DefaultCompute is NewCompute("") for the arenas of host networks, with
// nowhere to report a problem: a missing oneDNN is logged once and the
// reference backend used; a device backend named by $TINCT_BACKEND (which
// networks are made on, see model.NewOn) gives them the auto choice; an
// unknown name panics.
func DefaultCompute() Compute {
	name := ""
	if envDevice() {
		name = "auto"
	}
	c, err := NewCompute(name)
	if c == nil {
		panic("nn: TINCT_BACKEND: " + err.Error())
	}
	if err != nil {
		warnOnce.Do(func() { slog.Warn(err.Error()) })
	}
	return c
}

// envDevice says whether $TINCT_BACKEND names a registered (device)
// backend.
func envDevice() bool {
	for _, r := range registered {
		if r.name == ComputeChoice() {
			return true
		}
	}
	return false
}

// EnvDevice is a new instance of the device backend $TINCT_BACKEND names
// (cuda-shim in the tests), or nil when it names a host backend: where a
// worker's replica and a sampler's network go when no GPU was asked for,
// so that one variable runs the whole suite on a device backend.
func EnvDevice() (Compute, error) {
	if !envDevice() {
		return nil, nil
	}
	return NewCompute("")
}
