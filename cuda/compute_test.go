package cuda

import (
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

// countMem is memory that is only counted.
type countMem struct {
	id, n int
}

func (m countMem) At(off int) Mem {
	if off < 0 || off > m.n {
		panic("countMem: offset out of range")
	}
	return countMem{m.id, m.n - off}
}
func (m countMem) Len() int { return m.n }

// countBackend allocates and runs nothing, but checks each launch's
// arguments against the kernel's signature and each product's operands
// against their buffers, and keeps account of the memory and launches.
type countBackend struct {
	live     map[int]int // allocation id → floats
	next     int
	launches int
	closed   bool
}

func newCountBackend() *countBackend { return &countBackend{live: map[int]int{}} }

func (b *countBackend) Launch(kernel string, grid, block Dim3, args ...any) error {
	k, err := Kernel(kernel)
	if err != nil {
		return err
	}
	b.launches++
	return CheckArgs(k, args)
}
func (b *countBackend) Gemm(g Gemm) error { b.launches++; return g.Validate() }
func (b *countBackend) SMs() int          { return 132 }
func (b *countBackend) Alloc(n int) (Mem, error) {
	b.next++
	b.live[b.next] = n
	return countMem{b.next, n}, nil
}
func (b *countBackend) Free(m Mem) error {
	delete(b.live, m.(countMem).id)
	return nil
}
func (b *countBackend) Upload(Mem, []float32) error   { return nil }
func (b *countBackend) Download([]float32, Mem) error { return nil }
func (b *countBackend) Sync() error                   { return nil }
func (b *countBackend) Close() error                  { b.closed = true; return nil }

func (b *countBackend) bytes() int {
	total := 0
	for _, n := range b.live {
		total += 4 * n
	}
	return total
}

// TestMemoryPlan runs DefaultConfig's network at full sizes (a training
// step at batch 32 of 128×128, a forward at 256×256) on a backend that
// runs nothing: every operation's views, launches and products are
// checked at those sizes, and the memory is logged. Bytes is what the
// backend holds, and Close frees all of it and closes the backend.
func TestMemoryPlan(t *testing.T) {
	b := newCountBackend()
	c := NewCompute(b)
	u, err := model.NewOn(c, model.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := u.LoadAdam(model.NewAdam(u.NumParams(), 1e-3)); err != nil {
		t.Fatal(err)
	}
	own := c.Bytes()
	t.Logf("DefaultConfig network with Adam's moments: %.1f MB", float64(own)/1e6)
	for _, s := range [][3]int{{32, 128, 128}, {1, 256, 256}} {
		n, h, w := s[0], s[1], s[2]
		ar, err := u.NewArena(n, h, w)
		if err != nil {
			t.Fatal(err)
		}
		x, nv := nn.NewTensor(n, 4, h, w), make([]float32, n)
		before := c.Bytes()
		calls := 0
		u.TrainStep(ar, x, nv, nn.NewTensor(n, 3, h, w), 1, func(int) { calls++ })
		if calls != len(u.Blocks())+2 {
			t.Errorf("%d ready calls", calls)
		}
		u.Forward(ar, x, nv, false)
		if err := u.Err(); err != nil {
			t.Fatal(err)
		}
		t.Logf("after [%d 4 %d %d]: arenas and scratch %.2f GB (%.2f GB scratch grown by the step)", n, h, w,
			float64(c.Bytes()-own)/1e9, float64(c.Bytes()-before)/1e9)
	}
	u.Apply(model.NewAdam(u.NumParams(), 1e-3), make([]float32, u.NumParams()), make([]float32, u.NumBuffers()), 1)
	u.Hash(sha256.New())
	if err := u.Err(); err != nil {
		t.Fatal(err)
	}
	if c.Bytes() != b.bytes() {
		t.Errorf("Bytes %d, the backend holds %d", c.Bytes(), b.bytes())
	}
	u.Close()
	if len(b.live) != 0 || !b.closed || c.Bytes() != 0 {
		t.Errorf("after Close: %d allocations live, backend closed %v, Bytes %d", len(b.live), b.closed, c.Bytes())
	}
}

// TestMisuse: host memory, channel-blocked tensors, wrong shapes and
// lengths are errors, not panics; the first is kept, and every later
// operation does nothing.
func TestMisuse(t *testing.T) {
	host := nn.NewTensor(1, 2, 4, 4)
	cases := []struct {
		name, want string
		op         func(c *Compute, x nn.Tensor, v nn.Vec)
	}{
		{"host tensor", "host tensor", func(c *Compute, x nn.Tensor, _ nn.Vec) { c.Copy(host, x) }},
		{"blocked tensor", "channel-blocked", func(c *Compute, x nn.Tensor, _ nn.Vec) { x.Blocked = 16; c.Zero(x) }},
		{"shapes", "shapes", func(c *Compute, x nn.Tensor, _ nn.Vec) { c.Add(x, x.Channels(0, 1)) }},
		{"upload length", "upload of 3 values into 32", func(c *Compute, _ nn.Tensor, v nn.Vec) { c.Upload(v, make([]float32, 3)) }},
		{"host vector", "host vector", func(c *Compute, _ nn.Tensor, v nn.Vec) { c.CopyVec(nn.HostVec(make([]float32, 32)), v) }},
		{"vector lengths", "of 32 and 31", func(c *Compute, _ nn.Tensor, v nn.Vec) { c.EMA(v, v.Slice(1, 32), 0.9) }},
		{"embed", "2 variances into 1 images", func(c *Compute, x nn.Tensor, _ nn.Vec) { c.Embed([]float32{1, 2}, []float32{1}, x) }},
		{"host conv", "host weights", func(c *Compute, x nn.Tensor, _ nn.Vec) {
			c.ConvForward(&nn.Conv2D{In: 2, Out: 2, K: 1}, x, x, false)
		}},
	}
	for _, tc := range cases {
		b := newCountBackend()
		c := NewCompute(b)
		x, v := c.NewTensor(1, 2, 4, 4), c.NewVec(32)
		tc.op(c, x, v)
		if err := c.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
		first, launches := c.Err(), b.launches
		c.Zero(x)
		c.ZeroVec(v)
		if c.Err() != first || b.launches != launches {
			t.Errorf("%s: operations ran after the failure (%d launches, error %v)", tc.name, b.launches-launches, c.Err())
		}
		c.Close()
		if len(b.live) != 0 {
			t.Errorf("%s: %d allocations live after Close", tc.name, len(b.live))
		}
	}
	// after Close every operation fails
	c := NewCompute(newCountBackend())
	x := c.NewTensor(1, 1, 1, 4)
	c.Close()
	c.Zero(x)
	if c.Err() == nil {
		t.Error("an operation after Close: no error")
	}
}

// TestArenaCloseReleases: a device arena's Close gives its tensors back
// while the network lives on (a web app's evicted sampler), and only its
// own.
func TestArenaCloseReleases(t *testing.T) {
	b := newCountBackend()
	c := NewCompute(b)
	u, err := model.NewOn(c, model.Config{Widths: []int{8, 16}, BlockDepth: 1, EmbedDims: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	net := b.bytes()
	keep, err := u.NewArena(1, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	withOne := b.bytes()
	for range 3 {
		ar, err := u.NewArena(2, 16, 16)
		if err != nil {
			t.Fatal(err)
		}
		ar.Close()
		if b.bytes() != withOne || c.Bytes() != withOne {
			t.Fatalf("after an arena's Close the backend holds %d bytes, Bytes says %d; want %d", b.bytes(), c.Bytes(), withOne)
		}
	}
	keep.Close()
	if b.bytes() != net {
		t.Fatalf("with no arena the backend holds %d bytes, the network %d", b.bytes(), net)
	}
}
