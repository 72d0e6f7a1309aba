package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/tinct/tinct/internal/le"
	"github.com/tinct/tinct/model"
)

// Checksum's definition is on the wire between workers and the coordinator
// (a mismatch stops the run as diverged), so it must stay the SHA-256 of
// the little-endian float32 weights, then buffers, then the batch count.
func TestChecksumDefinition(t *testing.T) {
	net, err := model.New(model.Config{Widths: []int{8, 16}, BlockDepth: 1, EmbedDims: 8})
	if err != nil {
		t.Fatal(err)
	}
	for i := range net.Params {
		net.Params[i] = float32(i%97) * 0.01
	}
	bufs := net.Buffers(nil)
	for i := range bufs {
		bufs[i] = float32(i) * 0.5
	}
	net.SetBuffers(bufs, 7)
	h := sha256.New()
	h.Write(EncodeFloats(net.Params, net.Buffers(nil)))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(net.BatchesTracked()))
	h.Write(b[:])
	if got, want := Checksum(net), h.Sum(nil); string(got) != string(want) {
		t.Fatalf("Checksum = %x, want %x", got, want)
	}
	// The encoding path of big-endian hosts gives the same bytes.
	le.Host = false
	got := Checksum(net)
	le.Host = true
	if want := h.Sum(nil); string(got) != string(want) {
		t.Fatalf("Checksum (encoded) = %x, want %x", got, want)
	}
	net.Params[len(net.Params)-1] += 1
	if got, want := Checksum(net), h.Sum(nil); string(got) == string(want) {
		t.Fatal("Checksum did not change with the last weight")
	}
}

// StateChecksum is on the wire too (snapshot steps): the SHA-256 of
// Checksum(net), the EMA's weights, buffers and count, Adam's M, V and
// step. It must change when any one of them does.
func TestStateChecksum(t *testing.T) {
	cfg := model.Config{Widths: []int{4, 8}, BlockDepth: 1, EmbedDims: 4}
	net, err := model.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ema, err := model.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range net.Params {
		net.Params[i] = float32(i%89) * 0.01
		ema.Params[i] = float32(i%83) * 0.02
	}
	net.SetBuffers(net.Buffers(nil), 3)
	ema.SetBuffers(ema.Buffers(nil), 3)
	opt := model.NewAdam(net.NumParams(), 1e-3)
	for i := range opt.M {
		opt.M[i], opt.V[i] = float32(i)*1e-4, float32(i)*1e-6
	}
	opt.Step = 3

	h := sha256.New()
	h.Write(Checksum(net))
	h.Write(EncodeFloats(ema.Params, ema.Buffers(nil)))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 3)
	h.Write(b[:])
	h.Write(EncodeFloats(opt.M, opt.V))
	binary.LittleEndian.PutUint64(b[:], 3)
	h.Write(b[:])
	want := h.Sum(nil)
	if got := StateChecksum(net, ema, opt); string(got) != string(want) {
		t.Fatalf("StateChecksum = %x, want %x", got, want)
	}

	for _, c := range []struct {
		part   string
		change func()
	}{
		{"a weight", func() { net.Params[5] += 1 }},
		{"a BatchNorm buffer", func() { bufs := net.Buffers(nil); bufs[0] += 1; net.SetBuffers(bufs, 3) }},
		{"the batch count", func() { net.SetBuffers(net.Buffers(nil), 4) }},
		{"an EMA weight", func() { ema.Params[len(ema.Params)-1] += 1 }},
		{"an EMA buffer", func() { bufs := ema.Buffers(nil); bufs[len(bufs)-1] += 1; ema.SetBuffers(bufs, 3) }},
		{"the EMA's batch count", func() { ema.SetBuffers(ema.Buffers(nil), 4) }},
		{"an Adam first moment", func() { opt.M[7] += 1 }},
		{"an Adam second moment", func() { opt.V[len(opt.V)-1] += 1 }},
		{"the Adam step", func() { opt.Step++ }},
	} {
		netP, netB, netT := net.ReadParams(nil), net.Buffers(nil), net.BatchesTracked()
		emaP, emaB, emaT := ema.ReadParams(nil), ema.Buffers(nil), ema.BatchesTracked()
		m, v, step := append([]float32(nil), opt.M...), append([]float32(nil), opt.V...), opt.Step
		c.change()
		if got := StateChecksum(net, ema, opt); string(got) == string(want) {
			t.Errorf("StateChecksum did not change with %s", c.part)
		}
		net.LoadParams(netP)
		net.SetBuffers(netB, netT)
		ema.LoadParams(emaP)
		ema.SetBuffers(emaB, emaT)
		copy(opt.M, m)
		copy(opt.V, v)
		opt.Step = step
		if got := StateChecksum(net, ema, opt); string(got) != string(want) {
			t.Fatalf("StateChecksum not restored after %s", c.part)
		}
	}
}

// BenchmarkChecksum is one checksum of the full-width U-Net (1.95 M weights
// and its BatchNorm buffers); a training step takes two (the worker's
// replica, the coordinator's committed state).
func BenchmarkChecksum(b *testing.B) {
	net, err := model.New(model.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(4 * (len(net.Params) + net.NumBuffers())))
	for b.Loop() {
		_ = Checksum(net)
	}
}
