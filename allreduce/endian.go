package allreduce

import (
	"encoding/binary"
	"math"

	"github.com/tinct/tinct/internal/le"
)

// The wire carries raw little-endian float32. On little-endian hosts (all
// that tinct runs on, le.Host) the vectors are sent and copied without
// conversion.

// encodeLE writes v into b (len 4·len(v)) as little-endian float32s.
func encodeLE(b []byte, v []float32) {
	b = b[:4*len(v)]
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
}

// addLE adds the little-endian float32s in src (len 4·len(dst)) to dst.
func addLE(dst []float32, src []byte) {
	if f := le.Floats(src); f != nil {
		f = f[:len(dst)]
		for i, x := range f {
			dst[i] += x
		}
		return
	}
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// copyLE copies the little-endian float32s in src (len 4·len(dst)) to dst.
func copyLE(dst []float32, src []byte) {
	if le.Host {
		copy(le.Bytes(dst), src)
		return
	}
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
