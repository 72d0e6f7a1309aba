package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// gpu is an opened CUDA device: where `train device=cuda:N`, `worker join
// --gpu N`, and colorize, serve and bench with --gpu N compute (docs/gpu.md).
// Each network on it has a cuda.Compute of its own over the one device.
type gpu struct{ dev *cuda.Device }

// openGPU opens GPU n with matrix products in precision ("tf32", "fp32",
// "bf16"); what names the request in errors ("--gpu 0", "device=cuda:0").
// Without a driver, a device or NVIDIA's libraries it fails at once, saying
// what was looked for and where.
func openGPU(what string, n int, precision string) (*gpu, error) {
	prec, err := cuda.ParsePrecision(precision)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	d, err := cuda.Open(n, prec)
	if err != nil {
		return nil, fmt.Errorf("%s: no usable CUDA GPU: %w", what, err)
	}
	slog.Info("GPU", "device", d.Info.String(), "precision", prec.String(), "arch", d.Arch, "nvrtc", d.Compiled.Round(1e6).String())
	return &gpu{dev: d}, nil
}

// close releases the device; its networks must be closed first.
func (g *gpu) close() {
	if g != nil {
		g.dev.Close()
	}
}

// backend is a new backend instance for one network of a command: on the
// GPU, or, where none was asked for (g nil), on the device backend
// $TINCT_BACKEND names (cuda-shim); nil: the network stays in host memory.
func (g *gpu) backend() (nn.Compute, error) {
	if g != nil {
		return cuda.NewCompute(cuda.DeviceBackend(g.dev)), nil
	}
	return nn.EnvDevice()
}

// gpuFlags are a command's --gpu and --precision.
type gpuFlags struct {
	n         int
	precision string
}

func (f *gpuFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().IntVar(&f.n, "gpu", -1, what+" on this CUDA GPU (its index; -1: on the CPU). Needs NVIDIA's driver, NVRTC and cuBLAS, found at run time (docs/gpu.md)")
	cmd.Flags().StringVar(&f.precision, "precision", "tf32", "the GPU's matrix products: tf32, fp32 or bf16 (values stay fp32 in memory)")
}

// open opens the GPU the flags name; nil, nil without --gpu.
func (f *gpuFlags) open() (*gpu, error) {
	if f.n < 0 {
		return nil, nil
	}
	return openGPU(fmt.Sprintf("--gpu %d", f.n), f.n, f.precision)
}

// network is net where a sampler's or a benchmark's calls run: its copy on
// the GPU the flags name, or on the device backend $TINCT_BACKEND names
// (cuda-shim), else net itself; release frees the copy and the device.
func (f *gpuFlags) network(net *model.UNet) (*model.UNet, func(), error) {
	g, err := f.open()
	if err != nil {
		return nil, nil, err
	}
	be, err := g.backend()
	if err != nil || be == nil {
		return net, func() {}, err
	}
	d, err := net.To(be)
	if err != nil {
		be.Close()
		g.close()
		return nil, nil, err
	}
	return d, func() { d.Close(); g.close() }, nil
}
