package cluster

import (
	"bytes"
	"math"
	"testing"

	"github.com/tinct/tinct/internal/fuzzcheck"
)

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	v := EncodeFloats([]float32{1, -2.5, float32(math.Inf(1)), float32(math.NaN()), math.SmallestNonzeroFloat32}, []float32{-0.0, 3e38})
	fuzzcheck.WriteSeed(t, "FuzzDecode", "floats", v, int8(0))
	fuzzcheck.WriteSeed(t, "FuzzDecode", "one-float-short", v, int8(1))
	fuzzcheck.WriteSeed(t, "FuzzDecode", "truncated", v[:len(v)-2], int8(0))
	fuzzcheck.WriteSeed(t, "FuzzDecode", "signalling-nan", []byte{1, 0, 0x80, 0x7f}, int8(0))
	fuzzcheck.WriteSeed(t, "FuzzDecode", "empty", []byte{}, int8(0))
}

// FuzzDecode decodes the fuzzer's bytes into a vector of len(b)/4 + delta
// floats. Decode must succeed exactly when the bytes are 4 per float,
// leave the vector untouched when it fails, and otherwise decode so that
// Floats gives the same bytes back bit for bit (NaN payloads included),
// whether the vector is encoded whole or in two pieces.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x3f}, int8(0))
	f.Add([]byte{0, 0, 0x80}, int8(0))
	f.Add([]byte{}, int8(-1))
	f.Add(make([]byte, 40), int8(3))
	f.Fuzz(func(t *testing.T, b []byte, delta int8) {
		n := len(b)/4 + int(delta)
		if n < 0 {
			n = 0
		}
		dst := make([]float32, n)
		for i := range dst {
			dst[i] = float32(i) + 0.5
		}
		err := DecodeFloats(dst, b)
		if len(b) != 4*n {
			if err == nil {
				t.Fatalf("decoded %d bytes into %d floats", len(b), n)
			}
			for i, x := range dst {
				if x != float32(i)+0.5 {
					t.Fatalf("a failed Decode changed float %d", i)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("%d bytes into %d floats: %v", len(b), n, err)
		}
		if got := EncodeFloats(dst); !bytes.Equal(got, b) {
			t.Fatalf("Decode → Floats changed the bytes:\n% x\n% x", b, got)
		}
		if got := EncodeFloats(dst[:n/2], nil, dst[n/2:]); !bytes.Equal(got, b) {
			t.Fatal("Floats of the vector in pieces differs from Floats of it whole")
		}
	})
}
