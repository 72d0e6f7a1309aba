package model

import (
	"bytes"
	"encoding/binary"
	"math/big"
	"math/rand/v2"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/tinct/tinct/internal/fuzzcheck"
)

// fuzzNetConfig is the smallest network there is: its state dict (a few
// hundred bytes of weights) is the seed the fuzzer mutates into files that
// LoadStateDict accepts.
var fuzzNetConfig = Config{Widths: []int{1, 2}, BlockDepth: 1, EmbedDims: 2}

func encodeSafetensors(t testing.TB, ts map[string]StoredTensor, meta map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteSafetensors(&b, ts, meta); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rawSafetensors frames a hand-written JSON header and data as a
// safetensors file (no padding).
func rawSafetensors(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func fuzzNet(t testing.TB, seed uint64) *UNet {
	t.Helper()
	u, err := New(fuzzNetConfig)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(rand.New(rand.NewPCG(seed, 1)))
	return u
}

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	net := encodeSafetensors(t, fuzzNet(t, 1).StateDict(), map[string]string{"format": "pt"})
	small := encodeSafetensors(t, map[string]StoredTensor{"a": F32([]float32{1, -2, 3}, 3), "n": I64(7), "e": {DType: "U8", Shape: []int{0, 5}}}, nil)
	for name, data := range map[string][]byte{
		"net":                  net,
		"net-truncated-header": net[:40],
		"net-truncated-data":   net[:len(net)-3],
		"net-garbled-header":   append(append(append([]byte{}, net[:30]...), '}'), net[31:]...),
		"small":                small,
		"small-trailing":       append(append([]byte{}, small...), 0, 0, 0, 0),
		"huge-header-length":   binary.LittleEndian.AppendUint64(nil, 90<<20),
		"huge-tensor":          rawSafetensors(`{"x":{"dtype":"F64","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"overflowing-shape":    rawSafetensors(`{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}`, nil),
		"negative-dims":        rawSafetensors(`{"x":{"dtype":"F32","shape":[-1,-2],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"overlapping":          rawSafetensors(`{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, []byte{1, 2, 3}),
	} {
		fuzzcheck.WriteSeed(t, "FuzzReadSafetensors", name, data)
	}
	fuzzcheck.WriteSeed(t, "FuzzSafetensorsRoundTrip", "f32", "w", "F32", []byte{2, 3}, make([]byte, 24), "format", "pt")
	fuzzcheck.WriteSeed(t, "FuzzSafetensorsRoundTrip", "scalar", "adam.step", "I64", []byte{}, []byte("\x07\x00\x00\x00\x00\x00\x00\x00"), "", "")
	fuzzcheck.WriteSeed(t, "FuzzSafetensorsRoundTrip", "metadata-name", "__metadata__", "U8", []byte{1}, []byte{1}, "k", "v")
	fuzzcheck.WriteSeed(t, "FuzzSafetensorsRoundTrip", "invalid-utf8-name", "w\xff", "U8", []byte{1}, []byte{1}, "k\xfe", "v")
}

// FuzzReadSafetensors reads arbitrary bytes as a safetensors file. It
// checks that
//   - the reader allocates in proportion to the input, whatever sizes the
//     header claims (a header or tensor length is refused, not allocated);
//   - every tensor it accepts is consistent: a known dtype, no negative
//     dimension, exactly dtype size × ∏shape bytes (computed without
//     overflow);
//   - write → read gives back the same tensors and metadata;
//   - LoadStateDict of what it read into a tiny network either changes
//     nothing and fails, or succeeds and StateDict gives the tensors back
//     bit for bit.
func FuzzReadSafetensors(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Add(rawSafetensors(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 0x80, 0x3f}))
	f.Add(rawSafetensors(`{"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawSafetensors(`{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}`, make([]byte, 6)))
	f.Add(encodeSafetensors(f, fuzzNet(f, 2).StateDict(), nil))
	net := fuzzNet(f, 3)
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			ts   map[string]StoredTensor
			meta map[string]string
			err  error
		)
		n := fuzzcheck.AllocatedBytes(func() { ts, meta, err = ReadSafetensors(bytes.NewReader(data)) })
		if limit := 32*uint64(len(data)) + 1<<20; n > limit {
			t.Fatalf("reading %d bytes allocated %d bytes (limit %d)", len(data), n, limit)
		}
		if err != nil {
			if ts != nil || meta != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		for name, tn := range ts {
			size, ok := dtypeSize[tn.DType]
			if !ok {
				t.Fatalf("tensor %q: accepted dtype %q", name, tn.DType)
			}
			want := big.NewInt(int64(size))
			for _, d := range tn.Shape {
				if d < 0 {
					t.Fatalf("tensor %q: accepted shape %v", name, tn.Shape)
				}
				want.Mul(want, big.NewInt(int64(d)))
			}
			if want.Cmp(big.NewInt(int64(len(tn.Data)))) != 0 {
				t.Fatalf("tensor %q: %d bytes for %s %v", name, len(tn.Data), tn.DType, tn.Shape)
			}
		}

		var buf bytes.Buffer
		if err := WriteSafetensors(&buf, ts, meta); err != nil {
			t.Fatalf("what was read does not write: %v", err)
		}
		ts2, meta2, err := ReadSafetensors(&buf)
		if err != nil {
			t.Fatalf("what was written does not read: %v", err)
		}
		if !sameTensors(ts, ts2) || len(meta) != len(meta2) || len(meta) > 0 && !reflect.DeepEqual(meta, meta2) {
			t.Fatalf("write → read changed the file:\n%v %v\n%v %v", ts, meta, ts2, meta2)
		}

		before := net.StateDict()
		if err := net.LoadStateDict(ts); err != nil {
			if !sameTensors(before, net.StateDict()) {
				t.Fatalf("a failed LoadStateDict changed the network: %v", err)
			}
			return
		}
		if got := net.StateDict(); !sameTensors(got, ts) {
			t.Fatal("StateDict after LoadStateDict differs from what was loaded")
		}
	})
}

// FuzzSafetensorsRoundTrip writes one tensor (any name, dtype, shape and
// data) and a metadata entry next to a fixed one. WriteSafetensors must
// either refuse it or write a file that ReadSafetensors reads back as the
// same tensors and metadata.
func FuzzSafetensorsRoundTrip(f *testing.F) {
	f.Add("w", "F32", []byte{2}, []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}, "format", "pt")
	f.Add("", "BF16", []byte{}, []byte{1, 2}, "", "")
	f.Add("a", "BOOL", []byte{0, 3}, []byte{}, "x", "")
	f.Add("b", "F64", []byte{1, 1, 1}, make([]byte, 16), "y", "z")
	f.Fuzz(func(t *testing.T, name, dtype string, dims, data []byte, mk, mv string) {
		shape := make([]int, len(dims))
		for i, d := range dims {
			shape[i] = int(int8(d)) // negative dimensions too
		}
		ts := map[string]StoredTensor{name: {DType: dtype, Shape: shape, Data: data}, "fixed": I64(-1)}
		meta := map[string]string{mk: mv}
		var buf bytes.Buffer
		if err := WriteSafetensors(&buf, ts, meta); err != nil {
			return
		}
		if !utf8.ValidString(name) || !utf8.ValidString(mk) || !utf8.ValidString(mv) || name == "__metadata__" {
			t.Fatalf("wrote name %q, metadata %q=%q: JSON cannot carry them unchanged", name, mk, mv)
		}
		for _, d := range shape {
			if d < 0 {
				t.Fatalf("wrote shape %v", shape)
			}
		}
		got, gotMeta, err := ReadSafetensors(&buf)
		if err != nil {
			t.Fatalf("what was written does not read: %v", err)
		}
		if !sameTensors(got, ts) || !reflect.DeepEqual(gotMeta, meta) {
			t.Fatalf("write → read changed the file:\n%v %v\n%v %v", ts, meta, got, gotMeta)
		}
	})
}

// sameTensors compares tensor maps, a nil shape equal to an empty one.
func sameTensors(a, b map[string]StoredTensor) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || x.DType != y.DType || len(x.Shape) != len(y.Shape) || !bytes.Equal(x.Data, y.Data) {
			return false
		}
		for i := range x.Shape {
			if x.Shape[i] != y.Shape[i] {
				return false
			}
		}
	}
	return true
}
