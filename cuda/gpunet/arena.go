package gpunet

import (
	"fmt"

	"github.com/tinct/tinct/cuda"
)

// arena is model.Arena on the device: every activation, gradient and
// scratch buffer of the network for one (batch, height, width), allocated
// once. As in model/arena.go, skips are stored directly in the channel
// ranges of the up levels' concatenations, so nothing is copied to
// concatenate, and the block scratch (h, dA, dH) and the convolutions'
// im2col and flipped-kernel buffers are shared by all blocks.
type arena struct {
	N, H, W int

	input    cuda.View // [N,4,H,W]: noisy colour and gray
	noiseVar cuda.Mem  // [N]
	target   cuda.View // the true noise [N,3,H,W] (TrainStep)
	stemCat  cuda.View // [stem(x) | embedding]
	dStemCat cuda.View
	out      cuda.View // predicted noise [N,3,H,W]
	dOut     cuda.View
	topOut   cuda.View // last up block's output, the head's input
	dTopOut  cuda.View

	acts  map[*block]*blockAct
	pools []resample // down level l: pool(skip) into the next level's input
	ups   []resample // up level i: upsample prev into its first concat

	h, dA, dH cuda.Mem // per-block scratch, sized for the largest block
	col, rot  cuda.Mem // convolution scratch (cuda.Conv.ColFloats, RotFloats)
	partials  cuda.Mem // MSE: per-block partial sums (doubles)
	lossSum   cuda.Mem // MSE: the sum of squares (one double)

	owned []cuda.Mem
}

// blockAct is model's blockAct: the block's input and output (views into
// the arena's tensors), conv1's output (then, after SiLU, its sigmoid) and
// conv2's input, and their gradients.
type blockAct struct {
	x, out   cuda.View
	h1, act  cuda.View
	dx, dOut cuda.View
	// dxFirst: the block's backward is the first writer of dx and
	// overwrites it (model's blockAct.dxFirst).
	dxFirst bool
}

type resample struct{ src, dst, dSrc, dDst cuda.View }

// arena returns the arena for batches of n images of h×w, allocating it
// at the first use of that shape.
func (d *Net) arena(n, h, w int) (*arena, error) {
	key := [3]int{n, h, w}
	if ar, ok := d.arenas[key]; ok {
		return ar, nil
	}
	ar, err := d.newArena(n, h, w)
	if err != nil {
		return nil, err
	}
	d.arenas[key] = ar
	return ar, nil
}

// newArena follows model.UNet.NewArenaOn buffer for buffer.
func (d *Net) newArena(n, h, w int) (*arena, error) {
	u := d.host
	levels := len(u.Widths) - 1
	if n < 1 || h < 1 || w < 1 || h%(1<<levels) != 0 || w%(1<<levels) != 0 {
		return nil, fmt.Errorf("gpunet: image size %d×%d, batch %d: sizes must be positive multiples of %d", h, w, n, 1<<levels)
	}
	ar := &arena{N: n, H: h, W: w, acts: map[*block]*blockAct{}}
	var err error
	mem := func(floats int) cuda.Mem {
		if err != nil {
			return nil
		}
		var m cuda.Mem
		if m, err = d.b.Alloc(max(floats, 1)); err == nil {
			ar.owned = append(ar.owned, m)
		}
		return m
	}
	alloc := func(c, lv int) cuda.View {
		hl, wl := h>>lv, w>>lv
		return cuda.Contig(mem(n*c*hl*wl), n, c, hl, wl)
	}
	withGrad := func(t, g *cuda.View, c, lv int) {
		*t = alloc(c, lv)
		*g = alloc(c, lv)
	}
	wd := u.Widths
	D := u.BlockDepth
	ar.input = alloc(4, 0)
	ar.noiseVar = mem(n)
	ar.target = alloc(3, 0)
	withGrad(&ar.stemCat, &ar.dStemCat, wd[0]+u.EmbedDims, 0)
	ar.out = alloc(3, 0)
	ar.dOut = alloc(3, 0)

	// up concatenations: cat[l][j] = [previous | skip(l, D−1−j)]
	cat := make([][]cuda.View, levels)
	dcat := make([][]cuda.View, levels)
	prevC := wd[levels]
	for l := levels - 1; l >= 0; l-- {
		cat[l] = make([]cuda.View, D)
		dcat[l] = make([]cuda.View, D)
		for j := range D {
			first := wd[l]
			if j == 0 {
				first = prevC
			}
			withGrad(&cat[l][j], &dcat[l][j], first+wd[l], l)
		}
		prevC = wd[l]
	}
	if err != nil {
		d.free(ar.owned)
		return nil, fmt.Errorf("gpunet: allocating an arena for [%d 4 %d %d]: %w", n, h, w, err)
	}
	skip := func(t [][]cuda.View, l, i int) cuda.View {
		c := t[l][D-1-i]
		return c.Channels(c.C-wd[l], c.C)
	}
	var maxIn, maxOut, maxCol, maxRot int
	act := func(b *block, x, dx, out, dOut cuda.View, lv int) {
		ar.acts[b] = &blockAct{x: x, dx: dx, out: out, dOut: dOut, h1: alloc(b.Out, lv), act: alloc(b.Out, lv)}
		hw := (h >> lv) * (w >> lv)
		maxIn = max(maxIn, n*b.In*hw)
		maxOut = max(maxOut, n*b.Out*hw)
		for _, c := range []*cuda.Conv{b.skip, b.conv1, b.conv2} {
			if c != nil {
				maxCol = max(maxCol, c.ColFloats(n, h>>lv, w>>lv))
				maxRot = max(maxRot, c.RotFloats())
			}
		}
	}
	x, dx := ar.stemCat, ar.dStemCat
	for l, level := range d.downs {
		for i, b := range level {
			out, dOut := skip(cat, l, i), skip(dcat, l, i)
			act(b, x, dx, out, dOut, l)
			ar.acts[b].dxFirst = i == 0
			x, dx = out, dOut
		}
		var p resample
		p.src, p.dSrc = x, dx
		withGrad(&p.dst, &p.dDst, wd[l], l+1)
		ar.pools = append(ar.pools, p)
		x, dx = p.dst, p.dDst
	}
	for _, b := range d.mids {
		var out, dOut cuda.View
		withGrad(&out, &dOut, b.Out, levels)
		act(b, x, dx, out, dOut, levels)
		ar.acts[b].dxFirst = true
		x, dx = out, dOut
	}
	for i, level := range d.ups {
		l := levels - 1 - i
		first := cat[l][0].Channels(0, x.C)
		ar.ups = append(ar.ups, resample{src: x, dSrc: dx, dst: first, dDst: dcat[l][0].Channels(0, x.C)})
		for j, b := range level {
			var out, dOut cuda.View
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

	ar.h = mem(maxIn)
	ar.dH = mem(maxIn)
	ar.dA = mem(maxOut)
	ar.col = mem(maxCol)
	ar.rot = mem(maxRot)
	ar.partials = mem(2 * cuda.MaxPartials)
	ar.lossSum = mem(2)
	if err != nil {
		d.free(ar.owned)
		return nil, fmt.Errorf("gpunet: allocating an arena for [%d 4 %d %d]: %w", n, h, w, err)
	}
	return ar, nil
}

// scratch is the first n·c·h·w floats of buf as a contiguous tensor.
func scratch(buf cuda.Mem, n, c, h, w int) cuda.View { return cuda.Contig(buf, n, c, h, w) }

// Bytes is the device memory the network and its arenas hold.
func (d *Net) Bytes() int {
	total := 0
	for _, m := range d.owned {
		total += 4 * m.Len()
	}
	for _, ar := range d.arenas {
		for _, m := range ar.owned {
			total += 4 * m.Len()
		}
	}
	return total
}
