package model

import (
	"fmt"

	"github.com/tinct/tinct/nn"
)

// Arena holds every activation, gradient and scratch buffer of one network
// for one (batch, height, width), allocated once. Skips are stored directly
// in the channel ranges of the concatenations that consume them, so the
// U-Net copies nothing to concatenate. An Arena serves one call at a time.
type Arena struct {
	N, H, W int

	input    nn.Tensor // [N,4,H,W]: noisy colour and gray
	target   nn.Tensor // the true noise [N,3,H,W], on a device only
	noiseVar []float32
	stemCat  nn.Tensor // [stem(x) | embedding]
	out      nn.Tensor // predicted noise [N,3,H,W]
	dOut     nn.Tensor
	dStemCat nn.Tensor
	topOut   nn.Tensor // last up block's output, the head's input
	dTopOut  nn.Tensor

	acts  map[*Block]*blockAct
	pools []poolAct // down level l: pool(skip) into the next level's input
	ups   []upAct   // up level i: upsample prev into its first concat
	order []*Block  // forward order

	h, dA, dH nn.Tensor   // per-block scratch, sized for the largest block
	owned     []nn.Tensor // every buffer allocated above, for Bytes
	be        nn.Compute  // runs every operation; owns its scratch
	ownsBE    bool        // be is the arena's own (a host network's arena)
}

type blockAct struct {
	x, out nn.Tensor
	h1     nn.Tensor // conv1's output, then (after SiLU) its sigmoid
	act    nn.Tensor // silu(conv1 output), conv2's input
	// (h1, act and their gradient scratch are in the backend's
	// ActivationBlock layout)
	dx, dOut nn.Tensor
	// dxFirst: the block's backward is the first to write dx in a backward
	// pass, so it overwrites instead of adding to a cleared buffer. Only a
	// down block after a level's first reads an x that has another reader
	// (the up block it is the skip of), whose backward comes earlier.
	dxFirst bool
}

type poolAct struct{ src, dst, dSrc, dDst nn.Tensor }
type upAct struct{ src, dst, dSrc, dDst nn.Tensor }

// NewArena allocates the buffers for batches of n images of h×w; h and w must
// be divisible by 2^(levels−1).
func (u *UNet) NewArena(n, h, w int) (*Arena, error) {
	return u.NewArenaOn(nil, n, h, w)
}

// CheckShape says whether the network takes batches of n images of h×w:
// h and w must be divisible by 2^(levels−1).
func (u *UNet) CheckShape(n, h, w int) error {
	levels := len(u.Widths) - 1
	if n < 1 || h < 1 || w < 1 || h%(1<<levels) != 0 || w%(1<<levels) != 0 {
		return fmt.Errorf("image size %d×%d, batch %d: sizes must be positive multiples of %d", h, w, n, 1<<levels)
	}
	return nil
}

// NewArenaOn is NewArena on a given host backend instance (nil: the one
// $TINCT_BACKEND names, see nn.DefaultCompute), which the arena owns. A
// network on a device allocates its arenas there, whatever be is.
func (u *UNet) NewArenaOn(be nn.Compute, n, h, w int) (*Arena, error) {
	if err := u.CheckShape(n, h, w); err != nil {
		return nil, err
	}
	owns := u.be == nil
	switch {
	case !owns:
		be = u.be
	case be == nil:
		be = nn.DefaultCompute()
	}
	levels := len(u.Widths) - 1
	ar := &Arena{N: n, H: h, W: w, acts: map[*Block]*blockAct{}, noiseVar: make([]float32, n), be: be, ownsBE: owns}
	alloc := func(c, lv int) nn.Tensor {
		t := be.NewTensor(n, c, h>>lv, w>>lv)
		ar.owned = append(ar.owned, t)
		return t
	}
	withGrad := func(t, g *nn.Tensor, c, lv int) {
		*t = alloc(c, lv)
		*g = alloc(c, lv)
	}
	wd := u.Widths
	D := u.BlockDepth
	ar.input = alloc(4, 0)
	withGrad(&ar.stemCat, &ar.dStemCat, wd[0]+u.EmbedDims, 0)
	ar.out = alloc(3, 0)
	ar.dOut = alloc(3, 0)
	if !owns {
		ar.target = alloc(3, 0)
	}

	// up concatenations: cat[l][j] = [previous | skip(l, D−1−j)]
	cat := make([][]nn.Tensor, levels)
	dcat := make([][]nn.Tensor, levels)
	prevC := wd[levels]
	for l := levels - 1; l >= 0; l-- {
		cat[l] = make([]nn.Tensor, D)
		dcat[l] = make([]nn.Tensor, D)
		for j := range D {
			first := wd[l]
			if j == 0 {
				first = prevC
			}
			withGrad(&cat[l][j], &dcat[l][j], first+wd[l], l)
		}
		prevC = wd[l]
	}
	skip := func(t [][]nn.Tensor, l, i int) nn.Tensor {
		c := t[l][D-1-i]
		return c.Channels(c.C-wd[l], c.C)
	}
	var maxIn, maxOut int
	act := func(b *Block, x, dx, out, dOut nn.Tensor, lv int) {
		// conv1's output and conv2's input are the backend's own: in the
		// layout its convolutions want (nChw16c on oneDNN)
		inner := func() nn.Tensor {
			t := alloc(b.Out, lv)
			t.Blocked = be.ActivationBlock(b.Out)
			return t
		}
		ar.acts[b] = &blockAct{x: x, dx: dx, out: out, dOut: dOut, h1: inner(), act: inner()}
		ar.order = append(ar.order, b)
		maxIn = max(maxIn, n*b.In*(h>>lv)*(w>>lv))
		maxOut = max(maxOut, n*b.Out*(h>>lv)*(w>>lv))
	}
	x, dx := ar.stemCat, ar.dStemCat
	for l, level := range u.Downs {
		for i, b := range level {
			out, dOut := skip(cat, l, i), skip(dcat, l, i)
			act(b, x, dx, out, dOut, l)
			ar.acts[b].dxFirst = i == 0
			x, dx = out, dOut
		}
		var p poolAct
		p.src, p.dSrc = x, dx
		withGrad(&p.dst, &p.dDst, wd[l], l+1)
		ar.pools = append(ar.pools, p)
		x, dx = p.dst, p.dDst
	}
	for _, b := range u.Mids {
		var out, dOut nn.Tensor
		withGrad(&out, &dOut, b.Out, levels)
		act(b, x, dx, out, dOut, levels)
		ar.acts[b].dxFirst = true
		x, dx = out, dOut
	}
	for i, level := range u.Ups {
		l := levels - 1 - i
		first := cat[l][0].Channels(0, x.C)
		ar.ups = append(ar.ups, upAct{src: x, dSrc: dx, dst: first, dDst: dcat[l][0].Channels(0, x.C)})
		for j, b := range level {
			var out, dOut nn.Tensor
			if j < D-1 {
				out, dOut = cat[l][j+1].Channels(0, wd[l]), dcat[l][j+1].Channels(0, wd[l])
			} else {
				withGrad(&out, &dOut, wd[l], l)
			}
			act(b, cat[l][j], dcat[l][j], out, dOut, l)
			ar.acts[b].dxFirst = true
			x, dx = out, dOut
		}
	}
	ar.topOut, ar.dTopOut = x, dx

	ar.h = be.NewTensor(1, 1, 1, maxIn)
	ar.dH = be.NewTensor(1, 1, 1, maxIn)
	ar.dA = be.NewTensor(1, 1, 1, maxOut)
	ar.owned = append(ar.owned, ar.h, ar.dH, ar.dA)
	if err := be.Err(); err != nil {
		ar.Close()
		return nil, fmt.Errorf("model: arena for %d images of %d×%d on %s: %w", n, h, w, be.Name(), err)
	}
	return ar, nil
}

// Close frees the arena's memory: its own backend instance's scratch (a
// host network's arena, which may also simply be dropped), or on a device
// its tensors (the instance is the network's). The arena must not be used
// after.
func (ar *Arena) Close() {
	if ar.ownsBE {
		ar.be.Close()
	} else {
		ar.be.Release(ar.owned...)
	}
	ar.owned = nil
}

// Compute is the backend instance the arena runs on.
func (ar *Arena) Compute() nn.Compute { return ar.be }

// Bytes is the memory the arena holds.
func (ar *Arena) Bytes() int {
	total := 0
	for _, t := range ar.owned {
		total += 4 * t.N * t.C * t.H * t.W
	}
	return total + ar.be.Bytes()
}
