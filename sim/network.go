package sim

import (
	"fmt"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// Network is what the simulator knows of the model: sizes, the work of a
// training step per image, and when backward finishes each tail of the
// gradient (the all-reduce's buckets).
type Network struct {
	Params  int // trainable floats (the gradient the ring reduces)
	Buffers int // BatchNorm running statistics (reduced after the gradient)
	// MACs is the multiply-adds of one forward pass on one image at the
	// simulated size (model.UNet.MACs); a training step is 3× that (forward,
	// and backward's two products), each multiply-add 2 FLOPs.
	MACs int64
	// Ready is backward's announcements, in order: after Frac of backward's
	// work, Grads[From:] is final (model.UNet.BackwardNotify's ready calls).
	Ready []ReadyPoint
}

// ReadyPoint is one BackwardNotify announcement.
type ReadyPoint struct {
	Frac float64 // of backward's work done when it is made
	From int     // gradient offset: Grads[From:] is final
}

// FLOPsPerImage is a training step's floating-point work per image:
// 3 × 2 × MACs.
func (n Network) FLOPsPerImage() float64 { return 6 * float64(n.MACs) }

// NetworkOf describes u trained on size×size images. The order of the
// ready points is BackwardNotify's (head, up blocks, middle blocks, down
// blocks, each level and block in reverse, then the stem); a layer's
// backward work is taken as twice its forward multiply-adds (input and
// weight gradients), the stem's once (no input gradient).
func NetworkOf(u *model.UNet, size int) (Network, error) {
	if err := u.CheckShape(1, size, size); err != nil {
		return Network{}, err
	}
	n := Network{Params: u.NumParams(), Buffers: u.NumBuffers(), MACs: u.MACs(size, size)}
	conv := func(c *nn.Conv2D, hw int) float64 { return float64(c.Out*c.In*c.K*c.K) * float64(hw) }
	block := func(b *model.Block, hw int) float64 {
		w := conv(b.Conv1, hw) + conv(b.Conv2, hw)
		if b.Skip != nil {
			w += conv(b.Skip, hw)
		}
		return 2 * w
	}
	type piece struct {
		work float64
		from int
	}
	var ps []piece
	head := -1
	for _, p := range u.Layout {
		if p.Name == "head.weight" {
			head = p.Offset
		}
	}
	if head < 0 {
		return Network{}, fmt.Errorf("sim: the network has no head.weight")
	}
	hw := size * size
	ps = append(ps, piece{2 * conv(u.Head, hw), head})
	levels := len(u.Widths) - 1
	for i := len(u.Ups) - 1; i >= 0; i-- {
		s := size >> (levels - 1 - i)
		for j := len(u.Ups[i]) - 1; j >= 0; j-- {
			ps = append(ps, piece{block(u.Ups[i][j], s*s), u.Ups[i][j].Offset})
		}
	}
	for j := len(u.Mids) - 1; j >= 0; j-- {
		s := size >> levels
		ps = append(ps, piece{block(u.Mids[j], s*s), u.Mids[j].Offset})
	}
	for l := len(u.Downs) - 1; l >= 0; l-- {
		s := size >> l
		for j := len(u.Downs[l]) - 1; j >= 0; j-- {
			ps = append(ps, piece{block(u.Downs[l][j], s*s), u.Downs[l][j].Offset})
		}
	}
	ps = append(ps, piece{conv(u.Stem, hw), 0})
	var total, done float64
	for _, p := range ps {
		total += p.work
	}
	last := n.Params
	for _, p := range ps {
		if p.from > last {
			return Network{}, fmt.Errorf("sim: backward's ready offsets do not decrease (%d after %d)", p.from, last)
		}
		last = p.from
		done += p.work
		n.Ready = append(n.Ready, ReadyPoint{Frac: done / total, From: p.from})
	}
	n.Ready[len(n.Ready)-1].Frac = 1
	return n, nil
}

// DefaultNetwork is NetworkOf the default U-Net (model.DefaultConfig) at
// size×size.
func DefaultNetwork(size int) (Network, error) {
	u, err := model.New(model.DefaultConfig())
	if err != nil {
		return Network{}, err
	}
	return NetworkOf(u, size)
}

// Bucket is one all-reduce call of the gradient during backward.
type Bucket struct {
	Floats int
	Frac   float64 // of backward's work done when it may start
}

// Buckets cuts the gradient as allreduce.Overlap does for the ready
// points: a tail is reduced on its own once it is at least minBucket
// floats (or reaches offset 0), in order.
func (n Network) Buckets(minBucket int) []Bucket {
	var bs []Bucket
	hi := n.Params
	for _, r := range n.Ready {
		if r.From == hi || (r.From > 0 && hi-r.From < minBucket) {
			continue
		}
		bs = append(bs, Bucket{Floats: hi - r.From, Frac: r.Frac})
		hi = r.From
	}
	return bs
}
