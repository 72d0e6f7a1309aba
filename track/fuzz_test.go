package track

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tinct/tinct/internal/fuzzcheck"
)

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	scalars, offsets := sampleFile(t)

	w, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewRGBA(image.Rect(0, 0, 3, 2))
	img.Set(1, 1, color.RGBA{200, 10, 30, 128})
	if err := w.Image("samples/val", 12, img); err != nil {
		t.Fatal(err)
	}
	if err := w.Scalar("loss", 12, 0.25); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	images, err := os.ReadFile(w.eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	huge := appendRecord(nil, []byte("x"))
	binary.LittleEndian.PutUint64(huge, 1<<60)
	binary.LittleEndian.PutUint32(huge[8:], maskedCRC(huge[:8]))
	for name, data := range map[string][]byte{
		"writer-scalars":         scalars,
		"writer-images":          images,
		"tensorflow":             concat(tfRecord1, tfRecord2),
		"truncated-in-header":    scalars[:offsets[2]+5],
		"truncated-in-data":      scalars[:offsets[3]+recordHeaderLen+3],
		"flipped-data-byte":      flip(scalars, offsets[1]+recordHeaderLen+2),
		"flipped-length-byte":    flip(scalars, offsets[4]),
		"huge-length":            huge,
		"valid-crc-bad-protobuf": appendRecord(nil, []byte{0x0a, 0xff, 0x01}),
	} {
		fuzzcheck.WriteSeed(t, "FuzzReadEvents", name, data)
	}

	fuzzcheck.WriteSeed(t, "FuzzEventRoundTrip", "typical", 1.7e9, int64(12), "brain.Event:2", "loss", float32(0.25), int32(2), int32(3), uint8(3), []byte("\x89PNG"), 0.99, uint16(40), uint8(1))
	fuzzcheck.WriteSeed(t, "FuzzEventRoundTrip", "negative", -1.5, int64(-7), "", "", float32(-0.0), int32(-1), int32(math.MinInt32), uint8(255), []byte{}, math.Inf(-1), uint16(0), uint8(0))

	fuzzcheck.WriteSeed(t, "FuzzProtoField", "double", []byte("\x09\x00\x00\x80\x38\x99\xd6\xd7\x41rest"))
	fuzzcheck.WriteSeed(t, "FuzzProtoField", "string", []byte("\x1a\x0dbrain.Event:2"))
	fuzzcheck.WriteSeed(t, "FuzzProtoField", "long-varint", []byte("\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	fuzzcheck.WriteSeed(t, "FuzzProtoField", "overlong-varint", []byte("\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"))
	fuzzcheck.WriteSeed(t, "FuzzProtoField", "group", []byte("\x0b\x0c"))
	fuzzcheck.WriteSeed(t, "FuzzProtoField", "field-zero", []byte("\x02\x00"))
	fuzzcheck.WriteSeed(t, "FuzzProtoField", "bytes-too-long", []byte("\x0a\x05abc"))
}

// flip returns a copy of b with byte i inverted.
func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

// sameEvent compares events exactly (floats bit for bit).
func sameEvent(a, b Event) bool {
	if math.Float64bits(a.WallTime) != math.Float64bits(b.WallTime) || a.Step != b.Step || a.FileVersion != b.FileVersion ||
		len(a.Scalars) != len(b.Scalars) || len(a.Images) != len(b.Images) {
		return false
	}
	for k, v := range a.Scalars {
		w, ok := b.Scalars[k]
		if !ok || math.Float64bits(v) != math.Float64bits(w) {
			return false
		}
	}
	for k, v := range a.Images {
		w, ok := b.Images[k]
		if !ok || v.Height != w.Height || v.Width != w.Width || v.Colorspace != w.Colorspace || !bytes.Equal(v.PNG, w.PNG) {
			return false
		}
	}
	return true
}

// isPrefix reports whether a is a prefix of b.
func isPrefix(a, b []Event) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if !sameEvent(a[i], b[i]) {
			return false
		}
	}
	return true
}

// FuzzReadEvents reads arbitrary bytes as an event file. It checks that
// the reader allocates in proportion to the file whatever lengths the
// records claim; that every error wraps ErrTruncated or ErrCorrupt; that a
// file read without error is exactly a sequence of framed records, one
// event each; and that reading a prefix of the file gives a prefix of its
// events (a file being written never shows an event it will not keep).
func FuzzReadEvents(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendRecord(nil, encodeFileVersionEvent(1.5e9, fileVersion)))
	f.Add(appendRecord(appendRecord(nil, nil), encodeSummaryEvent(2, 3, encodeScalarValue("a", 1))))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			events []Event
			err    error
		)
		n := fuzzcheck.AllocatedBytes(func() { events, err = readEvents(bytes.NewReader(data), int64(len(data))) })
		if limit := 16*uint64(len(data)) + 1<<20; n > limit {
			t.Fatalf("reading %d bytes allocated %d", len(data), n)
		}
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error is neither truncated nor corrupt: %v", err)
		}
		if err == nil {
			records := 0
			for off := uint64(0); off < uint64(len(data)); records++ {
				if uint64(len(data))-off < recordHeaderLen {
					t.Fatalf("read without error, but %d bytes are left after record %d", uint64(len(data))-off, records)
				}
				l := binary.LittleEndian.Uint64(data[off:])
				if l > uint64(len(data)) {
					t.Fatalf("read without error a record of %d bytes in %d", l, len(data))
				}
				off += recordHeaderLen + l + recordFooterLen
				if off > uint64(len(data)) {
					t.Fatalf("read without error a record that overruns the file")
				}
			}
			if records != len(events) {
				t.Fatalf("%d records, %d events", records, len(events))
			}
		}
		for _, cut := range []int{len(data) / 2, len(data) - 1} {
			if cut < 0 {
				continue
			}
			prefix, _ := readEvents(bytes.NewReader(data[:cut]), int64(cut))
			if !isPrefix(prefix, events) {
				t.Fatalf("the first %d bytes give %d events that are not a prefix of the file's %d", cut, len(prefix), len(events))
			}
		}
	})
}

// appendDoubleTensor appends Summary.Value{tag, tensor: TensorProto{dtype:
// DT_DOUBLE, double_val: [v]}} (packed), as TensorFlow 2 writes scalars.
func appendDoubleTensor(tag string, v float64) []byte {
	tensor := appendVarintField(nil, tensorDtype, dtDouble)
	tensor = appendBytesField(tensor, tensorDoubleVal, binary.LittleEndian.AppendUint64(nil, math.Float64bits(v)))
	b := appendBytesField(nil, valueTag, []byte(tag))
	return appendBytesField(b, valueTensor, tensor)
}

// FuzzEventRoundTrip writes a file_version record and a summary record
// holding a scalar, an image and a TensorFlow 2 tensor scalar, all from the
// fuzzer's values, with this package's encoders and framing. Reading must
// give every value back exactly. Then one byte of the file (at flipAt) is
// changed by flipXor: the masked CRC-32C catches any change of one byte,
// so the read must fail with ErrCorrupt and return exactly the events
// before the changed record; cutting the file inside the second record
// must give the first event and ErrTruncated.
func FuzzEventRoundTrip(f *testing.F) {
	f.Add(1.7e9, int64(3), "brain.Event:2", "loss", float32(0.5), int32(4), int32(5), uint8(4), []byte{1, 2}, 2.5, uint16(7), uint8(0x10))
	f.Add(0.0, int64(0), "", "", float32(0), int32(0), int32(0), uint8(0), []byte{}, 0.0, uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, wall float64, step int64, version, tag string, v float32, h, w int32, cs uint8, png []byte, tf float64, flipAt uint16, flipXor uint8) {
		first := appendRecord(nil, encodeFileVersionEvent(wall, version))
		data := appendRecord(first, encodeSummaryEvent(wall, step,
			encodeScalarValue(tag, v), encodeImageValue(tag+"/img", int(h), int(w), int(cs), png), appendDoubleTensor(tag+"/tf", tf)))
		want := []Event{
			{WallTime: wall, FileVersion: version},
			{WallTime: wall, Step: step, Scalars: map[string]float64{tag: float64(v), tag + "/tf": tf},
				Images: map[string]ImageSummary{tag + "/img": {Height: int(h), Width: int(w), Colorspace: int(cs), PNG: png}}},
		}
		events, err := readEvents(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("reading what was written: %v", err)
		}
		if len(events) != 2 || !isPrefix(want, events) {
			t.Fatalf("read %+v\nwrote %+v", events, want)
		}

		cut := len(first) + 1 + int(flipAt)%(len(data)-len(first)-1)
		events, err = readEvents(bytes.NewReader(data[:cut]), int64(cut))
		if !errors.Is(err, ErrTruncated) || len(events) != 1 || !sameEvent(events[0], want[0]) {
			t.Fatalf("cut at %d of %d: %d events, %v", cut, len(data), len(events), err)
		}

		if flipXor == 0 {
			return
		}
		at := int(flipAt) % len(data)
		damaged := append([]byte(nil), data...)
		damaged[at] ^= flipXor
		events, err = readEvents(bytes.NewReader(damaged), int64(len(damaged)))
		keep := 0
		if at >= len(first) {
			keep = 1
		}
		if !errors.Is(err, ErrCorrupt) || len(events) != keep || !isPrefix(events, want) {
			t.Fatalf("byte %d changed: %d events, %v", at, len(events), err)
		}
	})
}

// FuzzProtoField decodes the first protocol buffer field of arbitrary bytes
// with nextField and with the protobuf module's protowire, the reference:
// they must agree on whether it is valid, and on its number, wire type,
// value and length. (nextField may refuse groups, which event files do not
// use; protowire skips them.)
func FuzzProtoField(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x08\x96\x01"))
	f.Add([]byte("\x15\x00\x00\x80\x3f"))
	f.Add([]byte("\x22\x03abcdef"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fld, rest, err := nextField(b)
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			if err == nil {
				t.Fatalf("nextField accepted a key protowire refuses: %v", protowire.ParseError(n))
			}
			return
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if typ == protowire.StartGroupType || typ == protowire.EndGroupType || m < 0 {
			if err == nil {
				t.Fatalf("nextField accepted field %d of type %d, which protowire refuses (%d)", num, typ, m)
			}
			return
		}
		if err != nil {
			t.Fatalf("nextField refused field %d of type %d: %v", num, typ, err)
		}
		if fld.num != int(num) || fld.typ != wireType(typ) || len(rest) != len(b)-n-m {
			t.Fatalf("nextField: field %d type %d, %d bytes left; protowire: %d, %d, %d", fld.num, fld.typ, len(rest), num, typ, len(b)-n-m)
		}
		v := b[n:]
		switch typ {
		case protowire.VarintType:
			u, _ := protowire.ConsumeVarint(v)
			if fld.u != u {
				t.Fatalf("varint %d, want %d", fld.u, u)
			}
		case protowire.Fixed32Type:
			u, _ := protowire.ConsumeFixed32(v)
			if fld.u != uint64(u) {
				t.Fatalf("fixed32 %d, want %d", fld.u, u)
			}
		case protowire.Fixed64Type:
			u, _ := protowire.ConsumeFixed64(v)
			if fld.u != u {
				t.Fatalf("fixed64 %d, want %d", fld.u, u)
			}
		case protowire.BytesType:
			d, _ := protowire.ConsumeBytes(v)
			if !bytes.Equal(fld.data, d) {
				t.Fatalf("bytes %q, want %q", fld.data, d)
			}
		}
	})
}
