package allreduce

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tinct/tinct/internal/le"
)

// codec is the gRPC codec of the Ring service. Every message is protobuf
// (allreduce.proto) on the wire, but chunks take a fast path: the sender
// encodes a txChunk itself, copying the floats once into a pooled buffer,
// and the receiver decodes the chunk header in place and keeps references
// to gRPC's receive buffers (rxChunk) instead of materializing the message
// and copying the bytes field, so the floats are added straight from the
// buffers the transport read them into. Anything else, or a chunk laid out
// in a way the fast path does not expect, goes through proto.
type codec struct{ pool mem.BufferPool }

func (codec) Name() string { return "proto" }

// txChunk is a chunk to send; data is copied during Marshal.
type txChunk struct {
	step          int64
	phase         int32
	offset, total uint64
	data          []float32
}

// rxChunk is a received chunk. Its payload holds references to the
// transport's buffers: call release when done with it.
type rxChunk struct {
	step          int64
	phase         int32
	offset, total uint64
	payload       mem.BufferSlice
	skip, n       int // the data are payload bytes [skip, skip+n)

	hello *Hello // set instead when the frame was a hello
}

func (c *rxChunk) release() {
	c.payload.Free()
	c.payload = nil
}

const (
	frameChunkField = 2
	chunkStep       = 1
	chunkPhase      = 2
	chunkOffset     = 3
	chunkTotal      = 4
	chunkData       = 5
)

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	t, ok := v.(*txChunk)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return nil, fmt.Errorf("allreduce codec: cannot marshal %T", v)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	// Chunk fields in field order, zero values omitted, as proto.Marshal does.
	var hdr [64]byte
	h := hdr[:0]
	if t.step != 0 {
		h = protowire.AppendTag(h, chunkStep, protowire.VarintType)
		h = protowire.AppendVarint(h, uint64(t.step))
	}
	if t.phase != 0 {
		h = protowire.AppendTag(h, chunkPhase, protowire.VarintType)
		h = protowire.AppendVarint(h, uint64(int64(t.phase)))
	}
	if t.offset != 0 {
		h = protowire.AppendTag(h, chunkOffset, protowire.VarintType)
		h = protowire.AppendVarint(h, t.offset)
	}
	if t.total != 0 {
		h = protowire.AppendTag(h, chunkTotal, protowire.VarintType)
		h = protowire.AppendVarint(h, t.total)
	}
	nd := 4 * len(t.data)
	if nd > 0 {
		h = protowire.AppendTag(h, chunkData, protowire.BytesType)
		h = protowire.AppendVarint(h, uint64(nd))
	}
	inner := len(h) + nd
	size := protowire.SizeTag(frameChunkField) + protowire.SizeVarint(uint64(inner)) + inner
	buf := c.pool.Get(size)
	b := protowire.AppendTag((*buf)[:0], frameChunkField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = append(b, h...)
	if le.Host {
		b = append(b, le.Bytes(t.data)...)
	} else {
		b = b[:len(b)+nd]
		encodeLE(b[len(b)-nd:], t.data)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	rx, ok := v.(*rxChunk)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("allreduce codec: cannot unmarshal into %T", v)
		}
		return proto.Unmarshal(data.Materialize(), m)
	}
	*rx = rxChunk{}
	if rx.parse(data) {
		data.Ref()
		rx.payload = data
		return nil
	}
	// The slow path: any valid Frame.
	var f Frame
	if err := proto.Unmarshal(data.Materialize(), &f); err != nil {
		return err
	}
	if h := f.GetHello(); h != nil {
		rx.hello = h
		return nil
	}
	ch := f.GetChunk()
	if ch == nil {
		return fmt.Errorf("allreduce codec: empty frame")
	}
	*rx = rxChunk{step: ch.Step, phase: ch.Phase, offset: ch.Offset, total: ch.Total,
		payload: mem.BufferSlice{mem.SliceBuffer(ch.Data)}, n: len(ch.Data)}
	return nil
}

// parse decodes a Frame{chunk} whose data field comes last and whose header
// lies in its first bytes; it reports false for anything else.
func (rx *rxChunk) parse(data mem.BufferSlice) bool {
	var hdr [96]byte
	total := data.Len()
	b := hdr[:data.CopyTo(hdr[:])]
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != frameChunkField || typ != protowire.BytesType {
		return false
	}
	p := n
	inner, n := protowire.ConsumeVarint(b[p:])
	if n < 0 || uint64(total-p-n) != inner {
		return false
	}
	p += n
	for p < total {
		if p >= len(b) {
			return false // a header longer than the window
		}
		num, typ, n := protowire.ConsumeTag(b[p:])
		if n < 0 {
			return false
		}
		p += n
		if num == chunkData {
			if typ != protowire.BytesType {
				return false
			}
			dl, n := protowire.ConsumeVarint(b[p:])
			if n < 0 || uint64(total-p-n) != dl || dl%4 != 0 {
				return false // not last, or odd: let proto sort it out
			}
			rx.skip, rx.n = p+n, int(dl)
			return true
		}
		if typ != protowire.VarintType {
			return false
		}
		x, n := protowire.ConsumeVarint(b[p:])
		if n < 0 {
			return false
		}
		p += n
		switch num {
		case chunkStep:
			rx.step = int64(x)
		case chunkPhase:
			rx.phase = int32(x)
		case chunkOffset:
			rx.offset = x
		case chunkTotal:
			rx.total = x
		default:
			return false // an unknown field: proto decides what it is
		}
	}
	return true // no data field: an empty chunk
}

// segments calls fn with the data bytes in order, as they lie in the
// transport's buffers.
func (rx *rxChunk) segments(fn func([]byte)) {
	skip, left := rx.skip, rx.n
	for _, buf := range rx.payload {
		if left == 0 {
			return
		}
		b := buf.ReadOnlyData()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		b = b[skip:]
		skip = 0
		if len(b) > left {
			b = b[:left]
		}
		left -= len(b)
		fn(b)
	}
}

// apply adds (or, with set, copies) the chunk's floats into dst, whose
// length is n/4; a float may straddle two buffers.
func (rx *rxChunk) apply(dst []float32, set bool) {
	op := addLE
	if set {
		op = copyLE
	}
	var carry [4]byte
	cn, i := 0, 0
	rx.segments(func(b []byte) {
		if cn > 0 {
			k := copy(carry[cn:], b)
			cn += k
			b = b[k:]
			if cn < 4 {
				return
			}
			op(dst[i:i+1], carry[:])
			i++
			cn = 0
		}
		m := len(b) / 4
		op(dst[i:i+m], b[:4*m])
		i += m
		cn = copy(carry[:], b[4*m:])
	})
}

// bufferPool is a gRPC buffer pool of power-of-two classes that, unlike
// gRPC's default, does not zero the buffers it hands out (every user
// overwrites them).
type bufferPool struct {
	classes [40]sync.Pool
}

func (p *bufferPool) Get(n int) *[]byte {
	if n <= 0 {
		b := []byte{}
		return &b
	}
	c := bits.Len(uint(n - 1)) // 2^c ≥ n
	if c >= len(p.classes) {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

func (p *bufferPool) Put(b *[]byte) {
	n := cap(*b)
	if n == 0 || n&(n-1) != 0 {
		return // not one of ours
	}
	c := bits.Len(uint(n - 1))
	if c < len(p.classes) {
		p.classes[c].Put(b)
	}
}
