package gpunet

import (
	"errors"
	"fmt"
	"math"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/model"
)

// Net is the device copy of a model.UNet, the host mirror: weights,
// gradients, BatchNorm running statistics and Adam moments live on the
// device, allocated once; activations live in one arena per batch shape,
// allocated at that shape's first use. The host mirror is kept in step:
// TrainStep fills its Grads and BatchNorm buffers, Apply and EMA its
// Params. A Net serves one call at a time.
type Net struct {
	host *model.UNet
	b    Backend

	// Flat vectors in the host's layouts: params, grads, m, v as
	// host.Params (model.UNet.Layout); bufs as host.Buffers (each block's
	// running mean then variance); stats the same shape, each block's mean
	// and 1/std of its last forward.
	params, grads, m, v cuda.Mem
	bufs, stats         cuda.Mem
	speeds              cuda.Mem // embedding speeds, EmbedDims/2

	stem, head *cuda.Conv
	downs, ups [][]*block
	mids       []*block
	blocks     []*block // forward order, as host.Blocks()

	arenas  map[[3]int]*arena
	owned   []cuda.Mem // Net's own buffers (arenas hold theirs)
	hostBuf []float32  // scratch for the buffers vector
	closed  bool
}

// block is model.Block on the device.
type block struct {
	*model.Block
	skip         *cuda.Conv // nil: identity
	norm         *cuda.BatchNorm
	conv1, conv2 *cuda.Conv
}

// New allocates the device copy of host and uploads its Params and
// BatchNorm buffers. Adam's moments start at zero (a fresh model.Adam):
// LoadAdam loads a resumed optimizer's.
func New(b Backend, host *model.UNet) (*Net, error) {
	if b == nil || host == nil {
		return nil, errors.New("gpunet: nil backend or network")
	}
	d := &Net{host: host, b: b, arenas: map[[3]int]*arena{}}
	var err error
	alloc := func(n int) cuda.Mem {
		if err != nil {
			return nil
		}
		var m cuda.Mem
		if m, err = b.Alloc(n); err == nil {
			d.owned = append(d.owned, m)
		}
		return m
	}
	np, nb := host.NumParams(), host.NumBuffers()
	d.params, d.grads, d.m, d.v = alloc(np), alloc(np), alloc(np), alloc(np)
	d.bufs, d.stats = alloc(nb), alloc(nb)
	d.speeds = alloc(host.EmbedDims / 2)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("gpunet: allocating the network (%d parameters): %w", np, err)
	}

	offset := map[string]int{}
	for _, p := range host.Layout {
		offset[p.Name] = p.Offset
	}
	conv := func(name string, in, out, k int) *cuda.Conv {
		o, nw := offset[name+".weight"], out*in*k*k
		return &cuda.Conv{In: in, Out: out, K: k,
			W: d.params.At(o), B: d.params.At(o + nw),
			GW: d.grads.At(o), GB: d.grads.At(o + nw)}
	}
	bo := 0 // offset in the buffers vector
	devBlock := func(hb *model.Block) *block {
		b := &block{Block: hb,
			conv1: conv(hb.Name+".conv1", hb.In, hb.Out, 3),
			conv2: conv(hb.Name+".conv2", hb.Out, hb.Out, 3)}
		if hb.Skip != nil {
			b.skip = conv(hb.Name+".skip", hb.In, hb.Out, 1)
		}
		c := hb.In
		b.norm = &cuda.BatchNorm{C: c, Eps: hb.Norm.Eps, Momentum: hb.Norm.Momentum,
			RunningMean: d.bufs.At(bo), RunningVar: d.bufs.At(bo + c),
			Mean: d.stats.At(bo), InvStd: d.stats.At(bo + c)}
		bo += 2 * c
		d.blocks = append(d.blocks, b)
		return b
	}
	d.stem = conv("stem", 4, host.Widths[0], 1)
	for _, level := range host.Downs {
		var l []*block
		for _, hb := range level {
			l = append(l, devBlock(hb))
		}
		d.downs = append(d.downs, l)
	}
	for _, hb := range host.Mids {
		d.mids = append(d.mids, devBlock(hb))
	}
	for _, level := range host.Ups {
		var l []*block
		for _, hb := range level {
			l = append(l, devBlock(hb))
		}
		d.ups = append(d.ups, l)
	}
	d.head = conv("head", host.Widths[0], 3, 1)

	if err := b.Upload(d.speeds, host.EmbedSpeeds()); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.Upload(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Host is the host mirror.
func (d *Net) Host() *model.UNet { return d.host }

func (d *Net) usable() error {
	if d.closed {
		return errors.New("gpunet: network closed")
	}
	return nil
}

// Upload copies the host mirror's Params and BatchNorm buffers to the
// device (after the caller replaced them: a loaded checkpoint, a replica
// state from the coordinator).
func (d *Net) Upload() error {
	if err := d.usable(); err != nil {
		return err
	}
	if err := d.b.Upload(d.params, d.host.Params); err != nil {
		return fmt.Errorf("gpunet: uploading parameters: %w", err)
	}
	d.hostBuf = d.host.Buffers(d.hostBuf[:0])
	if err := d.b.Upload(d.bufs, d.hostBuf); err != nil {
		return fmt.Errorf("gpunet: uploading BatchNorm buffers: %w", err)
	}
	return nil
}

// LoadAdam uploads opt.M and opt.V as the device's Adam moments. opt.Step
// stays on the host: Apply advances it.
func (d *Net) LoadAdam(opt *model.Adam) error {
	if err := d.checkAdam(opt); err != nil {
		return err
	}
	if err := d.b.Upload(d.m, opt.M); err != nil {
		return err
	}
	return d.b.Upload(d.v, opt.V)
}

// ReadAdam downloads the device's Adam moments into opt.M and opt.V (Apply
// updates them on the device only): before saving a checkpoint of opt.
func (d *Net) ReadAdam(opt *model.Adam) error {
	if err := d.checkAdam(opt); err != nil {
		return err
	}
	if err := d.b.Download(opt.M, d.m); err != nil {
		return err
	}
	return d.b.Download(opt.V, d.v)
}

func (d *Net) checkAdam(opt *model.Adam) error {
	if err := d.usable(); err != nil {
		return err
	}
	if opt == nil || len(opt.M) != d.host.NumParams() || len(opt.V) != d.host.NumParams() {
		return fmt.Errorf("gpunet: Adam moments must hold %d values each", d.host.NumParams())
	}
	return nil
}

// Apply is host.Apply(opt, grads, bufs, tracked) on the device: one Adam
// step with the device's moments (opt.Step advanced here, the step's
// constants computed as model.Adam computes them), then the BatchNorm
// buffers set. The host mirror's Params are downloaded and its buffers set,
// so that checksums over the host mirror stay right. opt.M and opt.V on the
// host are not updated (see ReadAdam).
func (d *Net) Apply(opt *model.Adam, grads, bufs []float32, tracked int64) error {
	if err := d.checkAdam(opt); err != nil {
		return err
	}
	np, nb := d.host.NumParams(), d.host.NumBuffers()
	if len(grads) != np || len(bufs) != nb {
		return fmt.Errorf("gpunet: apply of %d gradients and %d buffers to a network of %d and %d", len(grads), len(bufs), np, nb)
	}
	// the gradient buffer is free between steps: TrainStep clears it first
	if err := d.b.Upload(d.grads, grads); err != nil {
		return err
	}
	s := cuda.NewAdamStep(opt.LR, opt.Beta1, opt.Beta2, opt.Eps, opt.Step+1)
	if err := cuda.Adam(d.b, d.params, d.grads, d.m, d.v, np, s); err != nil {
		return err
	}
	opt.Step++
	if err := d.b.Upload(d.bufs, bufs); err != nil {
		return err
	}
	if err := d.b.Download(d.host.Params, d.params); err != nil {
		return err
	}
	d.host.SetBuffers(bufs, tracked)
	return nil
}

// EMA moves avg's weights towards d's, as model.EMA{decay, copyBuffers}
// .Update(avg.Host(), d.Host()) does, on the device, then downloads avg's
// Params and buffers into its host mirror. Both networks must be on the
// same Backend.
func (d *Net) EMA(avg *Net, decay float32, copyBuffers bool) error {
	if err := d.usable(); err != nil {
		return err
	}
	if avg == nil {
		return errors.New("gpunet: EMA into a nil network")
	}
	if err := avg.usable(); err != nil {
		return err
	}
	if avg.b != d.b || avg.host.NumParams() != d.host.NumParams() || avg.host.NumBuffers() != d.host.NumBuffers() {
		return errors.New("gpunet: EMA of networks of other shapes or on other devices")
	}
	np, nb := d.host.NumParams(), d.host.NumBuffers()
	if err := cuda.EMA(d.b, avg.params, d.params, np, decay); err != nil {
		return err
	}
	var err error
	if copyBuffers {
		err = cuda.Copy(d.b, cuda.Contig(d.bufs, 1, 1, 1, nb), cuda.Contig(avg.bufs, 1, 1, 1, nb))
	} else {
		err = cuda.EMA(d.b, avg.bufs, d.bufs, nb, decay)
	}
	if err != nil {
		return err
	}
	if err := d.b.Download(avg.host.Params, avg.params); err != nil {
		return err
	}
	avg.hostBuf = append(avg.hostBuf[:0], make([]float32, nb)...)
	if err := d.b.Download(avg.hostBuf, avg.bufs); err != nil {
		return err
	}
	avg.host.SetBuffers(avg.hostBuf, d.host.BatchesTracked())
	return nil
}

// FreeArenas frees every arena (the activations of each batch shape used
// so far); the next call allocates its shape's again. For a server that
// sees many image sizes.
func (d *Net) FreeArenas() {
	for _, ar := range d.arenas {
		d.free(ar.owned)
	}
	if d.arenas != nil {
		d.arenas = map[[3]int]*arena{}
	}
}

// Close frees the device memory (on a Backend that is a Freer).
func (d *Net) Close() {
	if d.closed {
		return
	}
	d.closed = true
	d.FreeArenas()
	d.arenas = nil
	d.free(d.owned)
	d.owned = nil
}

func (d *Net) free(ms []cuda.Mem) {
	f, ok := d.b.(Freer)
	if !ok {
		return
	}
	for _, m := range ms {
		f.Free(m)
	}
}

// mseLoss turns the double sum of squares that cuda.MSE leaves in two
// floats into the loss as nn.MSE rounds it.
func mseLoss(sum []float32, count int) float32 {
	total := math.Float64frombits(uint64(math.Float32bits(sum[0])) | uint64(math.Float32bits(sum[1]))<<32)
	return float32(total / float64(count))
}
