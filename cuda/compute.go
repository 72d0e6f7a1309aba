package cuda

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"math"

	"github.com/tinct/tinct/nn"
)

// Backend is what a Compute runs on: kernels and products (Exec) and the
// memory they work in. DeviceBackend makes a GPU one; package cuda/shim's
// CPU shim is the other (the .cu kernels compiled by g++).
type Backend interface {
	Exec
	Alloc(n int) (Mem, error) // n floats, zeroed
	Free(m Mem) error
	Upload(dst Mem, src []float32) error
	Download(dst []float32, src Mem) error // returns when dst holds the values
	Sync() error
}

// DeviceBackend makes a GPU a Backend. The Device stays its opener's: a
// Compute on it does not close it (several may share it).
func DeviceBackend(d *Device) Backend { return deviceBackend{d} }

type deviceBackend struct{ d *Device }

func (b deviceBackend) Launch(k string, grid, block Dim3, args ...any) error {
	return b.d.Launch(k, grid, block, args...)
}
func (b deviceBackend) Gemm(g Gemm) error                     { return b.d.Gemm(g) }
func (b deviceBackend) SMs() int                              { return b.d.SMs() }
func (b deviceBackend) Upload(dst Mem, src []float32) error   { return b.d.Upload(dst, src) }
func (b deviceBackend) Download(dst []float32, src Mem) error { return b.d.Download(dst, src) }
func (b deviceBackend) Sync() error                           { return b.d.Sync() }
func (b deviceBackend) Name() string {
	return fmt.Sprintf("cuda (%s, products in %s)", b.d.Info.Name, b.d.Precision)
}

func (b deviceBackend) Alloc(n int) (Mem, error) {
	m, err := b.d.Alloc(n)
	if err != nil {
		return nil, err
	}
	if err := b.d.Zero(m, n); err != nil {
		b.d.Free(m)
		return nil, err
	}
	return m, nil
}

func (b deviceBackend) Free(m Mem) error {
	dm, err := devMem(m)
	if err != nil {
		return err
	}
	return b.d.Free(dm)
}

// Compute is nn.Compute on a Backend: the network's tensors and vectors
// are allocated in the backend's memory and every operation is this
// package's kernels and products on them. The convolutions' im2col and
// flipped-kernel buffers, MSE's partial sums and the embedding's inputs
// are the instance's scratch, grown to the largest use. Every allocation
// is the instance's, freed by Close.
//
// Operations report no errors (nn.Compute): the first failure is kept in
// Err and every later operation does nothing, so a step's failure shows
// once, where the caller checks, with its cause.
type Compute struct {
	b     Backend
	err   error
	owned []Mem
	bytes int
	// scratch, grown as needed
	col, rot, sums, small Mem
	host                  []float32 // Hash's downloads
	closed                bool
}

// NewCompute returns an instance on b. When b is also an io.Closer it is
// the instance's own (the shim's process) and Close closes it.
func NewCompute(b Backend) *Compute { return &Compute{b: b} }

var errClosed = errors.New("cuda: compute instance closed")

func (c *Compute) Name() string {
	if n, ok := c.b.(interface{ Name() string }); ok {
		return n.Name()
	}
	return "cuda"
}

func (c *Compute) Device() bool            { return true }
func (c *Compute) Err() error              { return c.err }
func (c *Compute) Bytes() int              { return c.bytes }
func (c *Compute) ActivationBlock(int) int { return 0 }

// Close frees every allocation, the scratch too, after the device has
// finished with them.
func (c *Compute) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.b.Sync()
	for _, m := range append(c.owned, c.col, c.rot, c.sums, c.small) {
		if m != nil {
			c.b.Free(m)
		}
	}
	c.owned, c.col, c.rot, c.sums, c.small, c.bytes = nil, nil, nil, nil, nil, 0
	if cl, ok := c.b.(io.Closer); ok {
		cl.Close()
	}
	c.fail(errClosed)
}

func (c *Compute) fail(err error) {
	if c.err == nil && err != nil {
		c.err = err
	}
}

func (c *Compute) do(f func() error) {
	if c.err == nil {
		c.fail(f())
	}
}

// noMem stands for memory that could not be allocated: the tensors made
// after a failure keep their shapes (views of them work), and no operation
// reaches the backend with one, as the failure stops them all.
type noMem int

func (m noMem) At(off int) Mem { return m - noMem(off) }
func (m noMem) Len() int       { return int(m) }

func (c *Compute) alloc(n int) Mem {
	if c.err != nil {
		return noMem(n)
	}
	m, err := c.b.Alloc(n)
	if err != nil {
		c.fail(fmt.Errorf("cuda: allocating %d floats (%.1f MB held): %w", n, float64(c.bytes)/1e6, err))
		return noMem(n)
	}
	c.bytes += 4 * n
	return m
}

// grow returns the scratch buffer *s with room for n floats, replacing it
// (once the device has finished with it) when it is shorter.
func (c *Compute) grow(s *Mem, n int) Mem {
	if c.err != nil {
		return noMem(n)
	}
	if *s != nil && (*s).Len() >= n {
		return *s
	}
	if *s != nil {
		c.fail(c.b.Sync())
		c.fail(c.b.Free(*s))
		c.bytes -= 4 * (*s).Len()
		*s = nil
	}
	m := c.alloc(n)
	if c.err == nil {
		*s = m
	}
	return m
}

func (c *Compute) NewTensor(n, ch, h, w int) nn.Tensor {
	m := c.alloc(n * ch * h * w)
	if _, ok := m.(noMem); !ok {
		c.owned = append(c.owned, m)
	}
	return nn.Tensor{Mem: m, N: n, C: ch, H: h, W: w, Stride: ch * h * w}
}

// Release frees tensors NewTensor made (an arena's, before its network
// closes), once the device has finished with them.
func (c *Compute) Release(ts ...nn.Tensor) {
	if len(ts) == 0 || c.closed {
		return
	}
	c.b.Sync()
	for _, t := range ts {
		for i, m := range c.owned {
			if m == t.Mem {
				c.b.Free(m)
				c.bytes -= 4 * t.N * t.C * t.H * t.W
				c.owned = append(c.owned[:i], c.owned[i+1:]...)
				break
			}
		}
	}
}

func (c *Compute) NewVec(n int) nn.Vec {
	return nn.Vec{Mem: c.NewTensor(1, 1, 1, n).Mem, N: n}
}

// view maps a tensor to the kernels' view. An empty tensor (no memory, no
// shape) is an empty view: ConvBackward's "no input gradient".
func view(t nn.Tensor) (View, error) {
	if t.Mem == nil && (t.Data != nil || t.N*t.C*t.H*t.W != 0) {
		return View{}, fmt.Errorf("cuda: a host tensor %v given to the device", t.Shape())
	}
	if t.Blocked != 0 {
		return View{}, fmt.Errorf("cuda: a channel-blocked tensor %v", t.Shape())
	}
	return View{Mem: t.Mem, N: t.N, C: t.C, H: t.H, W: t.W, Stride: t.Stride}, nil
}

// op runs f on the views of ts unless an operation failed before.
func (c *Compute) op(f func(v []View) error, ts ...nn.Tensor) {
	c.do(func() error {
		vs := make([]View, len(ts))
		for i, t := range ts {
			var err error
			if vs[i], err = view(t); err != nil {
				return err
			}
		}
		return f(vs)
	})
}

// vecs runs f on the memory of vectors of one length.
func (c *Compute) vecs(what string, f func(m []Mem) error, vs ...nn.Vec) {
	c.do(func() error {
		ms := make([]Mem, len(vs))
		for i, v := range vs {
			if v.Mem == nil {
				return fmt.Errorf("cuda: %s: a host vector given to the device", what)
			}
			if v.N != vs[0].N {
				return fmt.Errorf("cuda: %s of vectors of %d and %d values", what, vs[0].N, v.N)
			}
			ms[i] = v.Mem
		}
		return f(ms)
	})
}

func (c *Compute) Upload(dst nn.Vec, src []float32) {
	c.vecs("upload", func(m []Mem) error {
		if len(src) != dst.N {
			return fmt.Errorf("cuda: upload of %d values into %d", len(src), dst.N)
		}
		return c.b.Upload(m[0], src)
	}, dst)
}

func (c *Compute) Download(dst []float32, src nn.Vec) {
	c.vecs("download", func(m []Mem) error {
		if len(dst) != src.N {
			return fmt.Errorf("cuda: download of %d values into %d", src.N, len(dst))
		}
		return c.b.Download(dst, m[0])
	}, src)
}

func flat(m Mem, n int) View { return Contig(m, 1, 1, 1, n) }

func (c *Compute) Copy(src, dst nn.Tensor) {
	c.op(func(v []View) error { return Copy(c.b, v[0], v[1]) }, src, dst)
}
func (c *Compute) Zero(t nn.Tensor) { c.op(func(v []View) error { return Fill(c.b, v[0], 0) }, t) }
func (c *Compute) CopyVec(src, dst nn.Vec) {
	c.vecs("copy", func(m []Mem) error { return Copy(c.b, flat(m[0], src.N), flat(m[1], src.N)) }, src, dst)
}
func (c *Compute) ZeroVec(v nn.Vec) {
	c.vecs("zero", func(m []Mem) error { return Fill(c.b, flat(m[0], v.N), 0) }, v)
}

// Embed uploads the batch's noise variances and the speeds (host values)
// next to each other into scratch.
func (c *Compute) Embed(noiseVar, speeds []float32, out nn.Tensor) {
	if out.N != len(noiseVar) {
		c.fail(fmt.Errorf("cuda: embed of %d variances into %d images", len(noiseVar), out.N))
	}
	m := c.grow(&c.small, len(noiseVar)+len(speeds))
	c.do(func() error { return c.b.Upload(m, noiseVar) })
	c.do(func() error { return c.b.Upload(m.At(len(noiseVar)), speeds) })
	c.op(func(v []View) error { return Embed(c.b, m, m.At(len(noiseVar)), len(speeds), v[0]) }, out)
}

func (c *Compute) conv(cv *nn.Conv2D) *Conv {
	k := &Conv{In: cv.In, Out: cv.Out, K: cv.K, W: cv.P.Mem, GW: cv.G.Mem}
	nw := cv.Out * cv.In * cv.K * cv.K
	if k.W == nil {
		c.fail(fmt.Errorf("cuda: conv%dx%d %d→%d with host weights", cv.K, cv.K, cv.In, cv.Out))
		return k
	}
	k.B = k.W.At(nw)
	if k.GW != nil {
		k.GB = k.GW.At(nw)
	}
	return k
}

func (c *Compute) ConvForward(cv *nn.Conv2D, x, y nn.Tensor, acc bool) {
	k := c.conv(cv)
	var col Mem
	if k.K == 3 {
		col = c.grow(&c.col, x.N*k.In*9*x.HW())
	}
	c.op(func(v []View) error { return k.Forward(c.b, v[0], v[1], col, acc) }, x, y)
}

// ConvSiLUForward is the two operations: the kernels have no fused one.
func (c *Compute) ConvSiLUForward(cv *nn.Conv2D, x, y nn.Tensor) {
	c.ConvForward(cv, x, y, false)
	c.op(func(v []View) error { return SiLUForward(c.b, v[0], v[0]) }, y)
}

func (c *Compute) ConvBackward(cv *nn.Conv2D, x, dy, dx nn.Tensor, acc bool) {
	k := c.conv(cv)
	var col, rot Mem
	if k.K == 3 {
		col, rot = c.grow(&c.col, k.ColFloats(x.N, x.H, x.W)), c.grow(&c.rot, k.RotFloats())
	}
	c.op(func(v []View) error { return k.Backward(c.b, v[0], v[1], v[2], col, rot, acc) }, x, dy, dx)
}

func (c *Compute) batchNorm(bn *nn.BatchNorm) *BatchNorm {
	if bn.Running.Mem == nil || bn.Stats.Mem == nil {
		c.fail(fmt.Errorf("cuda: BatchNorm of %d channels with host statistics", bn.C))
		return &BatchNorm{}
	}
	return &BatchNorm{C: bn.C, Eps: bn.Eps, Momentum: bn.Momentum,
		Mean: bn.Stats.Mem, InvStd: bn.Stats.Mem.At(bn.C),
		RunningMean: bn.Running.Mem, RunningVar: bn.Running.Mem.At(bn.C)}
}

// BatchNormForward counts a training batch as nn.BatchNorm.Forward does:
// the count lives on the host.
func (c *Compute) BatchNormForward(bn *nn.BatchNorm, x, y nn.Tensor, train bool) {
	b := c.batchNorm(bn)
	c.op(func(v []View) error { return b.Forward(c.b, v[0], v[1], train) }, x, y)
	if train && c.err == nil {
		bn.NumBatchesTracked++
	}
}

func (c *Compute) BatchNormApply(bn *nn.BatchNorm, x, y nn.Tensor) {
	b := c.batchNorm(bn)
	c.op(func(v []View) error { return b.Apply(c.b, v[0], v[1]) }, x, y)
}

func (c *Compute) BatchNormBackward(bn *nn.BatchNorm, x, dy, dx nn.Tensor, acc bool) {
	b := c.batchNorm(bn)
	c.op(func(v []View) error { return b.Backward(c.b, v[0], v[1], v[2], acc) }, x, dy, dx)
}

func (c *Compute) SiLUForwardSave(x, y nn.Tensor) {
	c.op(func(v []View) error { return SiLUForwardSave(c.b, v[0], v[1]) }, x, y)
}
func (c *Compute) SiLUBackwardSaved(sig, y, dy, dx nn.Tensor) {
	c.op(func(v []View) error { return SiLUBackwardSaved(c.b, v[0], v[1], v[2], v[3]) }, sig, y, dy, dx)
}
func (c *Compute) AvgPool2Forward(x, y nn.Tensor) {
	c.op(func(v []View) error { return AvgPool2Forward(c.b, v[0], v[1]) }, x, y)
}
func (c *Compute) AvgPool2Backward(dy, dx nn.Tensor) {
	c.op(func(v []View) error { return AvgPool2Backward(c.b, v[0], v[1]) }, dy, dx)
}
func (c *Compute) Upsample2Forward(x, y nn.Tensor) {
	c.op(func(v []View) error { return Upsample2Forward(c.b, v[0], v[1]) }, x, y)
}
func (c *Compute) Upsample2Backward(dy, dx nn.Tensor) {
	c.op(func(v []View) error { return Upsample2Backward(c.b, v[0], v[1]) }, dy, dx)
}
func (c *Compute) Add(src, dst nn.Tensor) {
	c.op(func(v []View) error { return AddTo(c.b, v[0], v[1]) }, src, dst)
}

// MSE reads back the double sum of squares that the kernels leave (its
// two halves as floats) and divides on the host as nn.MSE does. Without a
// gradient tensor the gradient goes to scratch.
func (c *Compute) MSE(pred, target, grad nn.Tensor, scale float32) float32 {
	count := pred.N * pred.C * pred.HW()
	if grad.Mem == nil && grad.Data == nil {
		grad = nn.Tensor{Mem: c.grow(&c.col, count), N: pred.N, C: pred.C, H: pred.H, W: pred.W, Stride: pred.C * pred.HW()}
	}
	sums := c.grow(&c.sums, 2*MaxPartials+2)
	c.op(func(v []View) error { return MSE(c.b, v[0], v[1], v[2], scale, sums, sums.At(2*MaxPartials)) }, pred, target, grad)
	var sum [2]float32
	c.do(func() error { return c.b.Download(sum[:], sums.At(2*MaxPartials)) })
	total := math.Float64frombits(uint64(math.Float32bits(sum[0])) | uint64(math.Float32bits(sum[1]))<<32)
	return float32(total / float64(count))
}

func (c *Compute) Adam(p, g, m, v nn.Vec, s nn.AdamConsts) {
	c.vecs("adam", func(ms []Mem) error { return Adam(c.b, ms[0], ms[1], ms[2], ms[3], p.N, s) }, p, g, m, v)
}

func (c *Compute) EMA(avg, live nn.Vec, d float32) {
	c.vecs("ema", func(m []Mem) error { return EMA(c.b, m[0], m[1], avg.N, d) }, avg, live)
}

// Hash downloads v a chunk at a time (1 MB of host memory, whatever the
// network's size).
func (c *Compute) Hash(h hash.Hash, v nn.Vec) {
	const chunk = 1 << 18
	if c.host == nil {
		c.host = make([]float32, chunk)
	}
	c.vecs("hash", func(m []Mem) error {
		for off := 0; off < v.N; off += chunk {
			buf := c.host[:min(chunk, v.N-off)]
			if err := c.b.Download(buf, m[0].At(off)); err != nil {
				return err
			}
			nn.HashFloats(h, buf)
		}
		return nil
	}, v)
}

var _ nn.Compute = (*Compute)(nil)
