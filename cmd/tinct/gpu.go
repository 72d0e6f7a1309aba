package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/gpunet"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/worker"
)

// gpu is an opened CUDA device: where `train device=cuda:N`, `worker join
// --gpu N`, and colorize, serve and bench with --gpu N compute (docs/gpu.md).
// Its networks are cuda/gpunet copies of host networks.
type gpu struct {
	dev *cuda.Device
	be  gpunet.Backend
}

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
	return &gpu{dev: d, be: gpunet.DeviceBackend(d)}, nil
}

// close releases the device; its networks must be closed first.
func (g *gpu) close() {
	if g != nil {
		g.dev.Close()
	}
}

// net copies host to the device.
func (g *gpu) net(host *model.UNet) (*gpunet.Net, error) {
	n, err := gpunet.New(g.be, host)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.dev.Name, err)
	}
	return n, nil
}

// replica is worker.UseDevice's opener: the worker's replica on the GPU.
func (g *gpu) replica(host *model.UNet) (worker.Device, error) { return g.net(host) }

// forwarder puts an inference network on the GPU for a sampler (serve's
// Options.Device); release frees it.
func (g *gpu) forwarder(net *model.UNet) (model.Forwarder, func(), error) {
	n, err := g.net(net)
	if err != nil {
		return nil, nil, err
	}
	return n, n.Close, nil
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

// forwarder puts net on the GPU the flags name for a sampler's or a
// benchmark's calls: nil, and nothing to release, without --gpu; release
// frees the network and the device.
func (f *gpuFlags) forwarder(net *model.UNet) (model.Forwarder, func(), error) {
	g, err := f.open()
	if err != nil || g == nil {
		return nil, func() {}, err
	}
	fwd, free, err := g.forwarder(net)
	if err != nil {
		g.close()
		return nil, nil, err
	}
	return fwd, func() { free(); g.close() }, nil
}
