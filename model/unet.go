package model

import (
	"fmt"
	"hash"
	"math"
	"math/rand/v2"

	"github.com/tinct/tinct/internal/modelspec"
	"github.com/tinct/tinct/nn"
)

// Config is the network's shape (Widths, BlockDepth, EmbedDims; its
// Describe and Validate). It is defined in internal/modelspec, so that the
// configuration can name it without linking the network.
type Config = modelspec.Config

// DefaultConfig is docs/design.md's network: 1,950,659 parameters.
func DefaultConfig() Config { return modelspec.DefaultConfig() }

// Block is the residual block: out = conv2(silu(conv1(norm(x)))) + skip(x),
// skip being a 1×1 convolution where the width changes and identity otherwise.
type Block struct {
	Name         string
	In, Out      int
	Offset       int // where the block's parameters start in UNet.Params
	Skip         *nn.Conv2D
	Norm         *nn.BatchNorm
	Conv1, Conv2 *nn.Conv2D
}

// Param names one tensor of the flat parameter vector.
type Param struct {
	Name   string
	Shape  []int
	Offset int
}

// Size is the number of values.
func (p Param) Size() int { return numel(p.Shape) }

// UNet is the noise-prediction network, on one compute backend. All
// weights live in P and all their gradients in G (same layout), and every
// BatchNorm running statistic in Bufs (Buffers' order), so the optimizer,
// the EMA, the checksum and the all-reduce each see a single vector; on a
// device backend these stay in device memory.
//
// Params is P's values on a host network (nil on a device: ReadParams
// and LoadParams reach them). Grads is the gradient on the host on every
// backend: G's own values on a host network; on a device, the copy that
// BackwardNotify downloads tail by tail for the all-reduce.
type UNet struct {
	Config
	P, G          nn.Vec
	Bufs          nn.Vec
	Params, Grads []float32
	Stem, Head    *nn.Conv2D
	Downs, Ups    [][]*Block
	Mids          []*Block
	Layout        []Param

	speeds []float32  // embedding angular speeds 2π·f
	stats  nn.Vec     // every BatchNorm's last mean and 1/std
	be     nn.Compute // the device backend the network lives on; nil: host memory
	m, v   nn.Vec     // Adam's moments on the device (LoadAdam)
}

// New builds a network in host memory with zero weights; call Init for
// PyTorch's default initialisation. Any host backend runs it (each arena
// its own instance).
func New(cfg Config) (*UNet, error) { return NewOn(nil, cfg) }

// NewOn builds the network in be's memory (nil or a host backend: host
// memory). A network on a device backend owns be (Close) and runs every
// operation on it; its weights start at zero and its running variances at
// one, as New's.
func NewOn(be nn.Compute, cfg Config) (*UNet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u := &UNet{Config: cfg}
	if be != nil && be.Device() {
		u.be = be
	}
	var convs []*nn.Conv2D
	conv := func(name string, in, out, k int) *nn.Conv2D {
		c := &nn.Conv2D{In: in, Out: out, K: k}
		u.Layout = append(u.Layout,
			Param{Name: name + ".weight", Shape: []int{out, in, k, k}},
			Param{Name: name + ".bias", Shape: []int{out}})
		convs = append(convs, c)
		return c
	}
	first := map[*Block]int{} // each block's first Layout entry
	block := func(name string, in, out int) *Block {
		b := &Block{Name: name, In: in, Out: out, Norm: nn.NewBatchNorm(in)}
		first[b] = len(u.Layout)
		if in != out {
			b.Skip = conv(name+".skip", in, out, 1)
		}
		b.Conv1 = conv(name+".conv1", in, out, 3)
		b.Conv2 = conv(name+".conv2", out, out, 3)
		return b
	}
	w := cfg.Widths
	u.Stem = conv("stem", 4, w[0], 1)
	c := w[0] + cfg.EmbedDims
	for i, width := range w[:len(w)-1] {
		var level []*Block
		for j := range cfg.BlockDepth {
			level = append(level, block(fmt.Sprintf("downs.%d.blocks.%d", i, j), c, width))
			c = width
		}
		u.Downs = append(u.Downs, level)
	}
	for j := range cfg.BlockDepth {
		u.Mids = append(u.Mids, block(fmt.Sprintf("mids.%d", j), c, w[len(w)-1]))
		c = w[len(w)-1]
	}
	for i := range len(w) - 1 {
		width := w[len(w)-2-i]
		var level []*Block
		for j := range cfg.BlockDepth {
			level = append(level, block(fmt.Sprintf("ups.%d.blocks.%d", i, j), c+width, width))
			c = width
		}
		u.Ups = append(u.Ups, level)
	}
	u.Head = conv("head", w[0], 3, 1)

	total := 0
	for i := range u.Layout {
		u.Layout[i].Offset = total
		total += u.Layout[i].Size()
	}
	for b, i := range first {
		b.Offset = u.Layout[i].Offset
	}
	mem := u.compute()
	u.P, u.G = mem.NewVec(total), mem.NewVec(total)
	u.Params, u.Grads = u.P.Data, u.G.Data
	if u.be != nil {
		u.Grads = make([]float32, total)
	}
	off := 0
	for _, cv := range convs {
		n := cv.NumParams()
		cv.Bind(u.P.Slice(off, off+n), u.G.Slice(off, off+n))
		off += n
	}
	nb := 0
	for _, b := range u.Blocks() {
		nb += 2 * b.In
	}
	u.Bufs, u.stats = mem.NewVec(nb), mem.NewVec(nb)
	init := make([]float32, 0, nb) // running mean 0, variance 1
	nb = 0
	for _, b := range u.Blocks() {
		c := b.In
		b.Norm.Bind(u.Bufs.Slice(nb, nb+2*c), u.stats.Slice(nb, nb+2*c))
		init = append(init, make([]float32, c)...)
		for range c {
			init = append(init, 1)
		}
		nb += 2 * c
	}
	mem.Upload(u.Bufs, init)
	if err := u.Err(); err != nil {
		u.Close()
		return nil, fmt.Errorf("model: allocating the network on %s: %w", u.be.Name(), err)
	}
	// f = exp(linspace(ln 1, ln 1000, half)); 2π·f rounded once to float32.
	half := cfg.EmbedDims / 2
	step := 0.0
	if half > 1 {
		step = math.Log(1000) / float64(half-1)
	}
	for k := range half {
		u.speeds = append(u.speeds, float32(2*math.Pi*math.Exp(float64(k)*step)))
	}
	return u, nil
}

// Init draws the weights as PyTorch's Conv2d does by default, U(±1/√fan_in)
// for weights and biases, except the head, which starts at zero.
func (u *UNet) Init(rng *rand.Rand) {
	all := u.Params
	if u.be != nil {
		all = make([]float32, u.P.N)
		defer u.LoadParams(all)
	}
	for _, p := range u.Layout {
		v := all[p.Offset : p.Offset+p.Size()]
		if p.Name == "head.weight" || p.Name == "head.bias" {
			clear(v)
			continue
		}
		fanIn := 0
		if len(p.Shape) == 4 {
			fanIn = p.Shape[1] * p.Shape[2] * p.Shape[3]
		} else {
			// a bias: fan-in of its weight, the tensor before it
			w := u.param(p.Name[:len(p.Name)-len("bias")] + "weight")
			fanIn = w.Shape[1] * w.Shape[2] * w.Shape[3]
		}
		bound := 1 / math.Sqrt(float64(fanIn))
		for i := range v {
			v[i] = float32((2*rng.Float64() - 1) * bound)
		}
	}
}

func (u *UNet) param(name string) Param {
	for _, p := range u.Layout {
		if p.Name == name {
			return p
		}
	}
	panic("model: no parameter " + name)
}

// Blocks lists every residual block in forward order.
func (u *UNet) Blocks() []*Block {
	var bs []*Block
	for _, l := range u.Downs {
		bs = append(bs, l...)
	}
	bs = append(bs, u.Mids...)
	for _, l := range u.Ups {
		bs = append(bs, l...)
	}
	return bs
}

// NumParams is the number of trainable values.
func (u *UNet) NumParams() int { return u.P.N }

// MACs is the number of multiply-adds of one forward pass on an h×w image,
// counting convolutions only.
func (u *UNet) MACs(h, w int) int64 {
	var total int64
	conv := func(c *nn.Conv2D, hw int) { total += int64(c.Out*c.In*c.K*c.K) * int64(hw) }
	conv(u.Stem, h*w)
	conv(u.Head, h*w)
	for i, l := range u.Downs {
		for _, b := range l {
			b.macs(conv, (h>>i)*(w>>i))
		}
	}
	levels := len(u.Widths) - 1
	for _, b := range u.Mids {
		b.macs(conv, (h>>levels)*(w>>levels))
	}
	for i, l := range u.Ups {
		for _, b := range l {
			b.macs(conv, (h>>(levels-1-i))*(w>>(levels-1-i)))
		}
	}
	return total
}

func (b *Block) macs(conv func(*nn.Conv2D, int), hw int) {
	if b.Skip != nil {
		conv(b.Skip, hw)
	}
	conv(b.Conv1, hw)
	conv(b.Conv2, hw)
}

// CopyFrom copies weights and BatchNorm buffers from v (same Config), on
// the device where both are on one (the same device), through the host
// otherwise.
func (u *UNet) CopyFrom(v *UNet) {
	if u.OnDevice() == v.OnDevice() {
		be := u.compute()
		be.CopyVec(v.P, u.P)
		be.CopyVec(v.Bufs, u.Bufs)
	} else {
		u.LoadParams(v.ReadParams(nil))
		u.compute().Upload(u.Bufs, v.Buffers(nil))
	}
	u.setTracked(v.BatchesTracked())
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// NumBuffers is the length of the vector Buffers returns.
func (u *UNet) NumBuffers() int { return u.Bufs.N }

// Buffers appends every BatchNorm running mean and variance, block by block,
// to dst: the statistics that replicas average after a step.
func (u *UNet) Buffers(dst []float32) []float32 {
	n := len(dst)
	dst = append(dst, make([]float32, u.Bufs.N)...)
	u.compute().Download(dst[n:], u.Bufs)
	return dst
}

// SetBuffers loads what Buffers produced and sets every num_batches_tracked.
func (u *UNet) SetBuffers(v []float32, tracked int64) {
	u.compute().Upload(u.Bufs, v[:u.Bufs.N])
	u.setTracked(tracked)
}

func (u *UNet) setTracked(tracked int64) {
	for _, b := range u.Blocks() {
		b.Norm.NumBatchesTracked = tracked
	}
}

// ReadParams appends the weights to dst (downloaded from a device).
func (u *UNet) ReadParams(dst []float32) []float32 {
	n := len(dst)
	dst = append(dst, make([]float32, u.P.N)...)
	u.compute().Download(dst[n:], u.P)
	return dst
}

// LoadParams replaces the weights with v (uploaded to a device).
func (u *UNet) LoadParams(v []float32) { u.compute().Upload(u.P, v) }

// To is a copy of the network (weights and buffers) on be, which the copy
// owns: a checkpoint's network put on a GPU for sampling or training.
func (u *UNet) To(be nn.Compute) (*UNet, error) {
	v, err := NewOn(be, u.Config)
	if err != nil {
		return nil, err
	}
	v.CopyFrom(u)
	if err := v.Err(); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// OnDevice says whether the network lives in a device backend's memory.
func (u *UNet) OnDevice() bool { return u.be != nil }

// Compute is the device backend the network lives on (nil: host memory).
func (u *UNet) Compute() nn.Compute { return u.be }

// Err is the device backend's first failure (nil on the host).
func (u *UNet) Err() error {
	if u.be == nil {
		return nil
	}
	return u.be.Err()
}

// Close frees a device network's memory (and its backend instance); a host
// network has nothing to free.
func (u *UNet) Close() {
	if u.be != nil {
		u.be.Close()
	}
}

// hostOps runs host networks' operations outside an arena (Adam, the EMA,
// copies, the checksum), none of which use scratch, so one instance serves
// every caller at once.
var hostOps = nn.NewKernels()

// compute is the backend that runs the network's own vector operations.
func (u *UNet) compute() nn.Compute {
	if u.be != nil {
		return u.be
	}
	return hostOps
}

// Hash writes the weights then the BatchNorm buffers to h as little-endian
// float32 bytes (the replicas' checksum; on a device, read where they are).
func (u *UNet) Hash(h hash.Hash) {
	u.compute().Hash(h, u.P)
	u.compute().Hash(h, u.Bufs)
}

// BatchesTracked is the BatchNorm layers' num_batches_tracked (all equal).
func (u *UNet) BatchesTracked() int64 { return u.Blocks()[0].Norm.NumBatchesTracked }
