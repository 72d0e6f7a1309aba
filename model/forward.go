package model

import (
	"fmt"

	"github.com/tinct/tinct/nn"
)

// Forward runs the network on x ([N,4,H,W] in host memory, contiguous:
// noisy colour then gray) and the per-image noise variances, returning the
// predicted noise [N,3,H,W], a view into the arena valid until its next
// use (on a device, ar.Download reads it). With train set, BatchNorm uses
// batch statistics and updates its running ones, and the activations are
// kept for Backward.
func (u *UNet) Forward(ar *Arena, x nn.Tensor, noiseVar []float32, train bool) nn.Tensor {
	if x.N != ar.N || x.C != 4 || x.H != ar.H || x.W != ar.W || len(noiseVar) != ar.N {
		panic(fmt.Sprintf("model: forward of %v with %d noise variances on an arena for [%d 4 %d %d]", x.Shape(), len(noiseVar), ar.N, ar.H, ar.W))
	}
	be := ar.be
	be.Upload(ar.input.Flat(), x.Data[:ar.input.N*ar.input.C*ar.input.HW()])
	copy(ar.noiseVar, noiseVar)
	be.ConvForward(u.Stem, ar.input, ar.stemCat.Channels(0, u.Widths[0]), false)
	be.Embed(ar.noiseVar, u.speeds, ar.stemCat.Channels(u.Widths[0], u.Widths[0]+u.EmbedDims))
	for l, level := range u.Downs {
		for _, b := range level {
			u.blockForward(ar, b, train)
		}
		p := ar.pools[l]
		be.AvgPool2Forward(p.src, p.dst)
	}
	for _, b := range u.Mids {
		u.blockForward(ar, b, train)
	}
	for i, level := range u.Ups {
		up := ar.ups[i]
		be.Upsample2Forward(up.src, up.dst)
		for _, b := range level {
			u.blockForward(ar, b, train)
		}
	}
	be.ConvForward(u.Head, ar.topOut, ar.out, false)
	return ar.out
}

func (u *UNet) blockForward(ar *Arena, b *Block, train bool) {
	a := ar.acts[b]
	x, out := a.x, a.out
	n, h, w := x.N, x.H, x.W
	be := ar.be
	if b.Skip != nil {
		be.ConvForward(b.Skip, x, out, false)
	} else {
		be.Copy(x, out)
	}
	hn := ar.h.Reshape(n, b.In, h, w)
	be.BatchNormForward(b.Norm, x, hn, train)
	if train {
		be.ConvForward(b.Conv1, hn, a.h1, false)
		be.SiLUForwardSave(a.h1, a.act) // h1 now holds σ(h1)
		be.ConvForward(b.Conv2, a.act, out, true)
		return
	}
	// Inference keeps nothing for a backward pass: conv1 and its SiLU run
	// as one operation, into scratch that all blocks share (the backward
	// pass's dA), so the blocks' own h1 and act are never touched (or
	// resident).
	act := ar.dA.Reshape(n, b.Out, h, w)
	act.Blocked = a.act.Blocked
	be.ConvSiLUForward(b.Conv1, hn, act)
	be.ConvForward(b.Conv2, act, out, true)
}

// Backward adds to u.Grads the gradient of the loss whose gradient with
// respect to the last training Forward's output is dOut. Grads is not
// cleared here: the caller zeroes it once per step.
func (u *UNet) Backward(ar *Arena, dOut nn.Tensor) { u.BackwardNotify(ar, dOut, nil) }

// BackwardNotify is Backward that calls ready(from) each time the gradients
// Grads[from:] are final, with from decreasing to 0 (parameters are laid
// out in forward order and backward visits layers in reverse): a caller can
// start reducing that tail of the gradient while backward goes on.
//
// On a device, each tail is downloaded into u.Grads before ready is told
// (the edge where the all-reduce takes the gradient; it is there on every
// backend when BackwardNotify returns).
func (u *UNet) BackwardNotify(ar *Arena, dOut nn.Tensor, notify func(from int)) {
	done := u.G.N // u.Grads[done:] is final on the host
	ready := func(from int) {
		if u.be != nil {
			u.be.Download(u.Grads[from:done], u.G.Slice(from, done))
		}
		done = from
		if notify != nil {
			notify(from)
		}
	}
	// No gradient buffer is cleared: each one's first writer overwrites it
	// (see blockAct.dxFirst), except the upsamples' inputs, cleared below.
	be := ar.be
	be.ConvBackward(u.Head, ar.topOut, dOut, ar.dTopOut, false)
	ready(u.param("head.weight").Offset)
	for i := len(u.Ups) - 1; i >= 0; i-- {
		level := u.Ups[i]
		for j := len(level) - 1; j >= 0; j-- {
			u.blockBackward(ar, level[j])
			ready(level[j].Offset)
		}
		up := ar.ups[i]
		be.Zero(up.dSrc) // its only writer, which adds
		be.Upsample2Backward(up.dDst, up.dSrc)
	}
	for j := len(u.Mids) - 1; j >= 0; j-- {
		u.blockBackward(ar, u.Mids[j])
		ready(u.Mids[j].Offset)
	}
	for l := len(u.Downs) - 1; l >= 0; l-- {
		p := ar.pools[l]
		be.AvgPool2Backward(p.dDst, p.dSrc)
		level := u.Downs[l]
		for j := len(level) - 1; j >= 0; j-- {
			u.blockBackward(ar, level[j])
			ready(level[j].Offset)
		}
	}
	// The embedding has no weights and the input needs no gradient.
	be.ConvBackward(u.Stem, ar.input, ar.dStemCat.Channels(0, u.Widths[0]), nn.Tensor{}, false)
	ready(0)
}

func (u *UNet) blockBackward(ar *Arena, b *Block) {
	a := ar.acts[b]
	x := a.x
	n, h, w := x.N, x.H, x.W
	be := ar.be
	hn := ar.h.Reshape(n, b.In, h, w)
	be.BatchNormApply(b.Norm, x, hn)
	dAct := ar.dA.Reshape(n, b.Out, h, w)
	dAct.Blocked = a.act.Blocked
	be.ConvBackward(b.Conv2, a.act, a.dOut, dAct, false)
	be.SiLUBackwardSaved(a.h1, a.act, dAct, dAct)
	dH := ar.dH.Reshape(n, b.In, h, w)
	be.ConvBackward(b.Conv1, hn, dAct, dH, false)
	be.BatchNormBackward(b.Norm, x, dH, a.dx, !a.dxFirst)
	if b.Skip != nil {
		be.ConvBackward(b.Skip, x, a.dOut, a.dx, true)
	} else {
		be.Add(a.dOut, a.dx)
	}
}
