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
	h.Write(Floats(net.Params, net.Buffers(nil)))
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
