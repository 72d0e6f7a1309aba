package allreduce

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// split cuts b into buffers at random places, as HTTP/2 frames arrive.
func split(b []byte, rng *rand.Rand) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(23))
		s = append(s, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return s
}

// The codec's chunk encoding is plain protobuf, and its fast decoder reads
// plain protobuf chunks, whatever the buffer boundaries.
func TestCodecChunks(t *testing.T) {
	c := codec{pool: buffers}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		step   int64
		phase  int32
		offset uint64
		n      int
	}{
		{0, 0, 0, 0}, {0, 0, 0, 1}, {7, 1, 3, 5}, {-3, 5, 1 << 40, 333}, {1 << 50, 2, 12345, 65536},
	} {
		data := make([]float32, tc.n)
		for i := range data {
			data[i] = float32(rng.NormFloat64())
		}
		if tc.n >= 3 {
			data[1], data[2] = float32(math.NaN()), float32(math.Inf(-1))
		}
		tx := &txChunk{step: tc.step, phase: tc.phase, offset: tc.offset, total: tc.offset + uint64(tc.n), data: data}

		// ours → proto
		out, err := c.Marshal(tx)
		if err != nil {
			t.Fatal(err)
		}
		wire := out.Materialize()
		out.Free()
		var f Frame
		if err := proto.Unmarshal(wire, &f); err != nil {
			t.Fatalf("%+v: proto cannot read our chunk: %v", tc, err)
		}
		ch := f.GetChunk()
		if ch.GetStep() != tc.step || ch.GetPhase() != tc.phase || ch.GetOffset() != tc.offset || ch.GetTotal() != tx.total || len(ch.GetData()) != 4*tc.n {
			t.Fatalf("%+v: proto reads %v", tc, ch)
		}
		want := make([]byte, 4*tc.n)
		encodeLE(want, data)
		if string(ch.GetData()) != string(want) {
			t.Fatalf("%+v: data differs", tc)
		}

		// proto → ours (fast path), over ragged buffers, added and copied
		std, err := proto.Marshal(&Frame{Body: &Frame_Chunk{Chunk: ch}})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{std, wire} {
			var rx rxChunk
			if err := c.Unmarshal(split(b, rng), &rx); err != nil {
				t.Fatal(err)
			}
			if rx.step != tc.step || rx.phase != tc.phase || rx.offset != tc.offset || rx.total != tx.total || rx.n != 4*tc.n {
				t.Fatalf("%+v: decoded %+v", tc, rx)
			}
			got := make([]float32, tc.n)
			rx.apply(got, true)
			sum := make([]float32, tc.n)
			for i := range sum {
				sum[i] = 1
			}
			rx.apply(sum, false)
			rx.release()
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(data[i]) {
					t.Fatalf("%+v: element %d copied as %g, want %g", tc, i, got[i], data[i])
				}
				if w := 1 + data[i]; math.Float32bits(sum[i]) != math.Float32bits(w) && !math.IsNaN(float64(w)) {
					t.Fatalf("%+v: element %d added as %g, want %g", tc, i, sum[i], w)
				}
			}
		}
	}
}

// Frames the fast path does not take (a hello, a chunk with its data
// before other fields) still decode.
func TestCodecSlowPath(t *testing.T) {
	c := codec{pool: buffers}
	hello, _ := proto.Marshal(&Frame{Body: &Frame_Hello{Hello: &Hello{Rank: 2, Size: 3, Nonce: []byte("n")}}})
	var rx rxChunk
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(hello)}, &rx); err != nil {
		t.Fatal(err)
	}
	if rx.hello == nil || rx.hello.Rank != 2 {
		t.Fatalf("hello decoded as %+v", rx)
	}
	// Chunk{data: 1.0, step: 9} with the data field first
	inner := []byte{5<<3 | 2, 4, 0, 0, 0x80, 0x3f, 1<<3 | 0, 9}
	frame := append([]byte{2<<3 | 2, byte(len(inner))}, inner...)
	rx = rxChunk{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(frame)}, &rx); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 1)
	rx.apply(got, true)
	if rx.step != 9 || rx.n != 4 || got[0] != 1 {
		t.Fatalf("decoded step %d, %d bytes, %v", rx.step, rx.n, got)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff})}, &rx); err == nil {
		t.Fatal("garbage decoded without an error")
	}
}
