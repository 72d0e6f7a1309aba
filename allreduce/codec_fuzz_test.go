package allreduce

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzCodecUnmarshal feeds the ring codec's receive path arbitrary frames,
// cut into transport buffers at seed-chosen places. It must never panic;
// whatever it accepts as a chunk must read as protobuf reads the same bytes
// (step, phase, offset, total and the data, whole floats or not), and
// whatever protobuf refuses it must refuse too.
func FuzzCodecUnmarshal(f *testing.F) {
	c := codec{pool: buffers}
	for _, tx := range []*txChunk{
		{},
		{step: 7, phase: 1, offset: 3, total: 8, data: []float32{1, -2, float32(math.NaN()), 4, 5}},
		{step: -3, phase: -1, offset: 1 << 40, total: 1<<40 + 2, data: []float32{0.5, 0.25}},
	} {
		out, err := c.Marshal(tx)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out.Materialize(), uint64(1))
		out.Free()
	}
	hello, _ := proto.Marshal(&Frame{Body: &Frame_Hello{Hello: &Hello{}}})
	f.Add(hello, uint64(2))
	f.Add([]byte{0x12, 0x03, 0x2a, 0x01, 0x00}, uint64(3)) // data of 1 byte
	f.Fuzz(func(t *testing.T, wire []byte, cut uint64) {
		var rx rxChunk
		err := c.Unmarshal(split(append([]byte(nil), wire...), rand.New(rand.NewPCG(cut, 0))), &rx)
		var want Frame
		perr := proto.Unmarshal(wire, &want)
		if perr != nil {
			if err == nil && rx.hello == nil {
				// the fast path accepted what protobuf refuses
				t.Fatalf("accepted %x as a chunk (step %d), protobuf refuses it: %v", wire, rx.step, perr)
			}
			return
		}
		if err != nil {
			if want.GetChunk() != nil || want.GetHello() != nil {
				t.Fatalf("refused %x (%v), a valid frame", wire, err)
			}
			return // an empty frame
		}
		defer func() {
			if rx.payload != nil {
				rx.release()
			}
		}()
		if rx.hello != nil {
			if want.GetHello() == nil {
				t.Fatalf("read %x as a hello; protobuf reads %v", wire, &want)
			}
			return
		}
		ch := want.GetChunk()
		if ch == nil {
			t.Fatalf("read %x as a chunk; protobuf reads %v", wire, &want)
		}
		if rx.step != ch.Step || rx.phase != ch.Phase || rx.offset != ch.Offset || rx.total != ch.Total || rx.n != len(ch.Data) {
			t.Fatalf("read step %d phase %d offset %d total %d, %d data bytes; protobuf: %d %d %d %d, %d",
				rx.step, rx.phase, rx.offset, rx.total, rx.n, ch.Step, ch.Phase, ch.Offset, ch.Total, len(ch.Data))
		}
		if rx.n%4 != 0 {
			return // the ring refuses chunks of partial floats before applying them
		}
		dst := make([]float32, rx.n/4)
		rx.apply(dst, true)
		for i := range dst {
			if got, want := math.Float32bits(dst[i]), binary.LittleEndian.Uint32(ch.Data[4*i:]); got != want {
				t.Fatalf("float %d: %08x, protobuf's bytes say %08x", i, got, want)
			}
		}
	})
}
