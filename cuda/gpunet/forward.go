package gpunet

import (
	"fmt"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/nn"
)

// This file is model/forward.go and model/train.go on the device, in the
// same order and structure, so that the two can be read side by side. The
// operations go through a pass, which holds the first error: after it,
// every later operation of the pass is skipped.

// pass runs one forward or training step on an arena.
type pass struct {
	e   cuda.Exec
	ar  *arena
	err error
}

func (o *pass) do(f func() error) {
	if o.err == nil {
		o.err = f()
	}
}

// Each operation with its shapes ([N,C,H,W] of its views).

// conv: x [N,In,H,W] → y [N,Out,H,W] (y += when accumulate).
func (o *pass) convForward(c *cuda.Conv, x, y cuda.View, accumulate bool) {
	o.do(func() error { return c.Forward(o.e, x, y, o.ar.col, accumulate) })
}

// conv backward: dy [N,Out,H,W] → GW, GB (added) and dx [N,In,H,W]
// (written, or added when accumulate; none when dx.Mem is nil).
func (o *pass) convBackward(c *cuda.Conv, x, dy, dx cuda.View, accumulate bool) {
	o.do(func() error { return c.Backward(o.e, x, dy, dx, o.ar.col, o.ar.rot, accumulate) })
}

// BatchNorm: x, y [N,C,H,W].
func (o *pass) bnForward(bn *cuda.BatchNorm, x, y cuda.View, train bool) {
	o.do(func() error { return bn.Forward(o.e, x, y, train) })
}
func (o *pass) bnApply(bn *cuda.BatchNorm, x, y cuda.View) {
	o.do(func() error { return bn.Apply(o.e, x, y) })
}
func (o *pass) bnBackward(bn *cuda.BatchNorm, x, dy, dx cuda.View, accumulate bool) {
	o.do(func() error { return bn.Backward(o.e, x, dy, dx, accumulate) })
}

// SiLU: x, y [N,C,H,W]; x becomes σ(x).
func (o *pass) siluForwardSave(x, y cuda.View) {
	o.do(func() error { return cuda.SiLUForwardSave(o.e, x, y) })
}
func (o *pass) siluBackwardSaved(sig, y, dy, dx cuda.View) {
	o.do(func() error { return cuda.SiLUBackwardSaved(o.e, sig, y, dy, dx) })
}

// pooling and upsampling: [N,C,2H,2W] ↔ [N,C,H,W].
func (o *pass) avgPool2Forward(x, y cuda.View) {
	o.do(func() error { return cuda.AvgPool2Forward(o.e, x, y) })
}
func (o *pass) avgPool2Backward(dy, dx cuda.View) {
	o.do(func() error { return cuda.AvgPool2Backward(o.e, dy, dx) })
}
func (o *pass) upsample2Forward(x, y cuda.View) {
	o.do(func() error { return cuda.Upsample2Forward(o.e, x, y) })
}
func (o *pass) upsample2Backward(dy, dx cuda.View) {
	o.do(func() error { return cuda.Upsample2Backward(o.e, dy, dx) })
}

// views: same shapes.
func (o *pass) copy(src, dst cuda.View)   { o.do(func() error { return cuda.Copy(o.e, src, dst) }) }
func (o *pass) add(src, dst cuda.View)    { o.do(func() error { return cuda.AddTo(o.e, src, dst) }) }
func (o *pass) zero(x cuda.View)          { o.do(func() error { return cuda.Fill(o.e, x, 0) }) }
func (o *pass) zeroMem(m cuda.Mem, n int) { o.zero(cuda.Contig(m, 1, 1, 1, n)) }

// forward is model.UNet.Forward on the arena's input and noise variances
// (uploaded by the caller); the prediction is left in ar.out.
func (d *Net) forward(o *pass, train bool) {
	ar, u := o.ar, d.host
	o.convForward(d.stem, ar.input, ar.stemCat.Channels(0, u.Widths[0]), false)
	d.embed(o)
	for l, level := range d.downs {
		for _, b := range level {
			d.blockForward(o, b, train)
		}
		p := ar.pools[l]
		o.avgPool2Forward(p.src, p.dst)
	}
	for _, b := range d.mids {
		d.blockForward(o, b, train)
	}
	for i, level := range d.ups {
		up := ar.ups[i]
		o.upsample2Forward(up.src, up.dst)
		for _, b := range level {
			d.blockForward(o, b, train)
		}
	}
	o.convForward(d.head, ar.topOut, ar.out, false)
}

// embed writes the sinusoidal embedding of each image's noise variance,
// [sin(2πf·v) | cos(2πf·v)], as constant planes after the stem's channels
// (model.UNet.embed's arithmetic: the angle a float product).
func (d *Net) embed(o *pass) {
	u := d.host
	e := o.ar.stemCat.Channels(u.Widths[0], u.Widths[0]+u.EmbedDims)
	o.do(func() error { return cuda.Embed(o.e, o.ar.noiseVar, d.speeds, u.EmbedDims/2, e) })
}

func (d *Net) blockForward(o *pass, b *block, train bool) {
	a := o.ar.acts[b]
	x, out := a.x, a.out
	n, h, w := x.N, x.H, x.W
	if b.skip != nil {
		o.convForward(b.skip, x, out, false)
	} else {
		o.copy(x, out)
	}
	hn := scratch(o.ar.h, n, b.In, h, w)
	o.bnForward(b.norm, x, hn, train)
	o.convForward(b.conv1, hn, a.h1, false)
	o.siluForwardSave(a.h1, a.act) // h1 now holds σ(h1)
	o.convForward(b.conv2, a.act, out, true)
}

// backward is model.UNet.BackwardNotify from ar.dOut: it adds to the
// device's gradients (cleared by the caller) and calls ready(from) each
// time grads[from:] are final. No gradient buffer is cleared: each one's
// first writer overwrites it (blockAct.dxFirst), except the upsamples'
// inputs, cleared below.
func (d *Net) backward(o *pass, ready func(from int)) {
	ar := o.ar
	o.convBackward(d.head, ar.topOut, ar.dOut, ar.dTopOut, false)
	ready(d.headOffset())
	for i := len(d.ups) - 1; i >= 0; i-- {
		level := d.ups[i]
		for j := len(level) - 1; j >= 0; j-- {
			d.blockBackward(o, level[j])
			ready(level[j].Offset)
		}
		up := ar.ups[i]
		o.zero(up.dSrc) // its only writer, which adds
		o.upsample2Backward(up.dDst, up.dSrc)
	}
	for j := len(d.mids) - 1; j >= 0; j-- {
		d.blockBackward(o, d.mids[j])
		ready(d.mids[j].Offset)
	}
	for l := len(d.downs) - 1; l >= 0; l-- {
		p := ar.pools[l]
		o.avgPool2Backward(p.dDst, p.dSrc)
		level := d.downs[l]
		for j := len(level) - 1; j >= 0; j-- {
			d.blockBackward(o, level[j])
			ready(level[j].Offset)
		}
	}
	// The embedding has no weights and the input needs no gradient.
	o.convBackward(d.stem, ar.input, ar.dStemCat.Channels(0, d.host.Widths[0]), cuda.View{}, false)
	ready(0)
}

// headOffset is where the head's parameters start: the last tail.
func (d *Net) headOffset() int {
	for _, p := range d.host.Layout {
		if p.Name == "head.weight" {
			return p.Offset
		}
	}
	panic("gpunet: no head.weight in the layout")
}

func (d *Net) blockBackward(o *pass, b *block) {
	a := o.ar.acts[b]
	x := a.x
	n, h, w := x.N, x.H, x.W
	hn := scratch(o.ar.h, n, b.In, h, w)
	o.bnApply(b.norm, x, hn)
	dAct := scratch(o.ar.dA, n, b.Out, h, w)
	o.convBackward(b.conv2, a.act, a.dOut, dAct, false)
	o.siluBackwardSaved(a.h1, a.act, dAct, dAct)
	dH := scratch(o.ar.dH, n, b.In, h, w)
	o.convBackward(b.conv1, hn, dAct, dH, false)
	o.bnBackward(b.norm, x, dH, a.dx, !a.dxFirst)
	if b.skip != nil {
		o.convBackward(b.skip, x, a.dOut, a.dx, true)
	} else {
		o.add(a.dOut, a.dx)
	}
}

// TrainStep is host.TrainStep on the device: forward in training mode on
// x ([N,4,H,W]) and the noise variances, the MSE against the true noise
// ([N,3,H,W]), backward of that loss multiplied by scale. x, noiseVar and
// noise are uploaded once. The gradients are downloaded into host.Grads
// tail by tail: when ready(from) is called, host.Grads[from:] are final,
// so an all-reduce of that tail can start. The batch's BatchNorm running
// statistics are left in the host mirror (as host.Buffers returns them)
// and its num_batches_tracked advanced, as on the host. It returns the
// unscaled loss. On an error the host mirror's Grads and buffers are
// unspecified.
func (d *Net) TrainStep(x nn.Tensor, noiseVar []float32, noise nn.Tensor, scale float32, ready func(from int)) (float32, error) {
	if err := d.usable(); err != nil {
		return 0, err
	}
	if err := checkInput("train step", x, noiseVar); err != nil {
		return 0, err
	}
	if noise.N != x.N || noise.C != 3 || noise.H != x.H || noise.W != x.W || noise.Blocked != 0 || len(noise.Data) < imagesLen(noise) {
		return 0, fmt.Errorf("gpunet: train step: noise %v for input %v: want [%d 3 %d %d]", noise.Shape(), x.Shape(), x.N, x.H, x.W)
	}
	ar, err := d.arena(x.N, x.H, x.W)
	if err != nil {
		return 0, err
	}
	if err := d.upload(ar, x, noiseVar); err != nil {
		return 0, err
	}
	if err := d.uploadTensor(ar.target, noise); err != nil {
		return 0, err
	}
	o := &pass{e: d.b, ar: ar}
	host := d.host
	o.zeroMem(d.grads, host.NumParams())
	d.forward(o, true)
	o.do(func() error { return cuda.MSE(o.e, ar.out, ar.target, ar.dOut, scale, ar.partials, ar.lossSum) })
	var sum [2]float32
	o.do(func() error { return d.b.Download(sum[:], ar.lossSum) })
	if o.err != nil {
		return 0, fmt.Errorf("gpunet: train step forward: %w", o.err)
	}
	loss := mseLoss(sum[:], ar.out.Elems())

	// Each download waits for the device: without a ready to tell, the
	// gradients come back in one piece at the end.
	prev := len(host.Grads) // host.Grads[prev:] are downloaded
	d.backward(o, func(from int) {
		if ready == nil && from > 0 {
			return
		}
		o.do(func() error { return d.b.Download(host.Grads[from:prev], d.grads.At(from)) })
		if o.err != nil {
			return
		}
		prev = from
		if ready != nil {
			ready(from)
		}
	})
	if o.err != nil {
		return 0, fmt.Errorf("gpunet: train step backward: %w", o.err)
	}
	if err := d.downloadBuffers(); err != nil {
		return 0, err
	}
	for _, b := range host.Blocks() {
		b.Norm.NumBatchesTracked++
	}
	return loss, nil
}

// Forward is host.Forward(ar, x, noiseVar, false) on the device
// (inference: BatchNorm with the running statistics), for colorize and
// serve: the predicted noise, [N,3,H,W], goes into out.
func (d *Net) Forward(x nn.Tensor, noiseVar []float32, out []float32) error {
	if err := d.usable(); err != nil {
		return err
	}
	if err := checkInput("forward", x, noiseVar); err != nil {
		return err
	}
	if len(out) != x.N*3*x.H*x.W {
		return fmt.Errorf("gpunet: forward: output of %d values for %d images of %d×%d (want %d)", len(out), x.N, x.H, x.W, x.N*3*x.H*x.W)
	}
	ar, err := d.arena(x.N, x.H, x.W)
	if err != nil {
		return err
	}
	if err := d.upload(ar, x, noiseVar); err != nil {
		return err
	}
	o := &pass{e: d.b, ar: ar}
	d.forward(o, false)
	o.do(func() error { return d.b.Download(out, ar.out.Mem) })
	if o.err != nil {
		return fmt.Errorf("gpunet: forward: %w", o.err)
	}
	return nil
}

func checkInput(op string, x nn.Tensor, noiseVar []float32) error {
	if x.N < 1 || x.C != 4 || x.H < 1 || x.W < 1 || x.Blocked != 0 || len(x.Data) < imagesLen(x) {
		return fmt.Errorf("gpunet: %s: input %v (%d values): want [N 4 H W]", op, x.Shape(), len(x.Data))
	}
	if len(noiseVar) != x.N {
		return fmt.Errorf("gpunet: %s: %d noise variances for %d images", op, len(noiseVar), x.N)
	}
	return nil
}

// imagesLen is the data a tensor's N images span.
func imagesLen(t nn.Tensor) int {
	if t.N < 1 {
		return 0
	}
	return (t.N-1)*t.Stride + t.C*t.H*t.W
}

// upload copies the network input and the noise variances to the arena.
func (d *Net) upload(ar *arena, x nn.Tensor, noiseVar []float32) error {
	if err := d.uploadTensor(ar.input, x); err != nil {
		return err
	}
	return d.b.Upload(ar.noiseVar, noiseVar)
}

// uploadTensor copies t into the contiguous view dst of the same shape:
// in one copy when t is contiguous, image by image otherwise.
func (d *Net) uploadTensor(dst cuda.View, t nn.Tensor) error {
	chw := t.C * t.H * t.W
	if t.Contiguous() {
		return d.b.Upload(dst.Mem, t.Data[:t.N*chw])
	}
	for n := range t.N {
		if err := d.b.Upload(dst.Mem.At(n*dst.Stride), t.Image(n)); err != nil {
			return err
		}
	}
	return nil
}

// downloadBuffers copies the device's BatchNorm running statistics into
// the host mirror (keeping its num_batches_tracked).
func (d *Net) downloadBuffers() error {
	d.hostBuf = append(d.hostBuf[:0], make([]float32, d.host.NumBuffers())...)
	if err := d.b.Download(d.hostBuf, d.bufs); err != nil {
		return err
	}
	d.host.SetBuffers(d.hostBuf, d.host.BatchesTracked())
	return nil
}
