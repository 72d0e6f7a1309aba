package track

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A TensorFlow 2 event file holding tf.summary.scalar("accuracy", 0.99,
// step=77), as dumped with xxd in the tests of TensorBoard's Rust data server
// (tensorboard/data/server/tf_record.rs). The first record is what every
// event file starts with; the second stores its scalar as a tensor.
var (
	tfRecord1Data = []byte("\x09\x00\x00\x80\x38\x99\xd6\xd7\x41\x1a\x0dbrain.Event:2")
	tfRecord1     = concat(
		[]byte("\x18\x00\x00\x00\x00\x00\x00\x00\xa3\x7f\x4b\x22"),
		tfRecord1Data,
		[]byte("\x12\x4b\x36\xab"),
	)
	tfRecord2 = concat(
		[]byte("\x32\x00\x00\x00\x00\x00\x00\x00\x24\x19\x56\xec"),
		[]byte("\x09\xc4\x05\xb7\x3d\x99\xd6\xd7\x41"+
			"\x10\x4d\x2a\x25"+
			"\x0a\x23\x0a\x08accuracy"+
			"\x42\x0a\x08\x01\x12\x00\x22\x04\xa4\x70\x7d\x3f\x4a"+
			"\x0b\x0a\x09\x0a\x07scalars"),
		[]byte("\xa5\x5b\x64\x33"),
	)
)

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestMaskedCRCVectors(t *testing.T) {
	// CRC-32C check value, and RFC 3720 B.4 (32 zero bytes).
	if got := crc32c([]byte("123456789")); got != 0xe3069283 {
		t.Errorf("crc32c(123456789) = %#08x, want 0xe3069283", got)
	}
	if got := crc32c(make([]byte, 32)); got != 0x8a9136aa {
		t.Errorf("crc32c(32 zeros) = %#08x, want 0x8a9136aa", got)
	}
	// Masked CRC from a real TFRecord (TensorBoard's masked_crc.rs tests).
	if got := maskedCRC([]byte("\x1a\x11CRC test, one two")); got != 0x5794d08a {
		t.Errorf("maskedCRC = %#08x, want 0x5794d08a", got)
	}
}

func crc32c(b []byte) uint32 {
	// Undo the mask: maskedCRC = rotr15(crc) + delta.
	m := maskedCRC(b) - 0xa282ead8
	return m<<15 | m>>17
}

// Our encoder reproduces TensorFlow's first record byte for byte.
func TestFileVersionRecordMatchesTensorFlow(t *testing.T) {
	wall := math.Float64frombits(binary.LittleEndian.Uint64(tfRecord1Data[1:9]))
	got := appendRecord(nil, encodeFileVersionEvent(wall, fileVersion))
	if !bytes.Equal(got, tfRecord1) {
		t.Fatalf("record:\n got % x\nwant % x", got, tfRecord1)
	}
}

func TestReadEventsTensorFlowFile(t *testing.T) {
	path := writeTemp(t, concat(tfRecord1, tfRecord2))
	events, err := ReadEvents(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("%d events, want 2", len(events))
	}
	if events[0].FileVersion != "brain.Event:2" || events[0].Step != 0 {
		t.Errorf("event 0 = %+v", events[0])
	}
	ev := events[1]
	if ev.Step != 77 || ev.FileVersion != "" {
		t.Errorf("event 1 step %d, file_version %q", ev.Step, ev.FileVersion)
	}
	if v, ok := ev.Scalars["accuracy"]; !ok || v != float64(float32(0.99)) {
		t.Errorf("accuracy = %v (present %v), want float32(0.99)", v, ok)
	}
	if ev.WallTime < 1.5e9 || ev.WallTime > 2e9 || ev.WallTime <= events[0].WallTime {
		t.Errorf("wall times %f, %f", events[0].WallTime, ev.WallTime)
	}
}

// sampleFile writes a small event file through a Writer and returns its bytes
// and the offset of each record.
func sampleFile(t *testing.T) (data []byte, offsets []int) {
	t.Helper()
	w, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 4; step++ {
		if err := w.Scalar("loss/step", step, 1/float64(step)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(w.eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); {
		offsets = append(offsets, off)
		off += recordHeaderLen + int(binary.LittleEndian.Uint64(data[off:])) + recordFooterLen
	}
	if len(offsets) != 5 {
		t.Fatalf("%d records, want 5", len(offsets))
	}
	return data, offsets
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.out.tfevents.test")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// recordAt returns the index of the record that holds byte off.
func recordAt(offsets []int, off int) int {
	i := 0
	for i+1 < len(offsets) && offsets[i+1] <= off {
		i++
	}
	return i
}

func TestReadEventsFlippedByte(t *testing.T) {
	data, offsets := sampleFile(t)

	// A byte in the middle of the file, named in the error.
	mid := len(data) / 2
	rec := recordAt(offsets, mid)
	bad := bytes.Clone(data)
	bad[mid] ^= 0x40
	events, err := ReadEvents(writeTemp(t, bad))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped byte %d: err = %v, want ErrCorrupt", mid, err)
	}
	if want := "record " + strconv.Itoa(rec) + " at offset " + strconv.Itoa(offsets[rec]); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
	if len(events) != rec {
		t.Errorf("%d events before the corrupt record %d", len(events), rec)
	}

	// Every byte: a change anywhere, length, CRCs or data, is caught as
	// corruption of the record holding it (never mistaken for truncation).
	for off := range data {
		bad := bytes.Clone(data)
		bad[off] ^= 0xff
		events, err := readEvents(bytes.NewReader(bad), int64(len(bad)))
		rec := recordAt(offsets, off)
		if !errors.Is(err, ErrCorrupt) || len(events) != rec {
			t.Fatalf("byte %d (record %d) flipped: %d events, err %v", off, rec, len(events), err)
		}
	}
}

func TestReadEventsTruncated(t *testing.T) {
	data, offsets := sampleFile(t)
	full, err := readEvents(bytes.NewReader(data), int64(len(data)))
	if err != nil || len(full) != len(offsets) {
		t.Fatalf("intact file: %d events, err %v", len(full), err)
	}
	for cut := 0; cut < len(data); cut++ {
		// Records wholly before the cut survive; the cut is clean if it
		// falls where a record starts.
		complete := recordAt(offsets, cut)
		atBoundary := offsets[complete] == cut
		events, err := readEvents(bytes.NewReader(data[:cut]), int64(cut))
		if len(events) != complete {
			t.Fatalf("cut at %d: %d events, want %d", cut, len(events), complete)
		}
		for i := range events {
			if events[i].Step != full[i].Step || events[i].WallTime != full[i].WallTime {
				t.Fatalf("cut at %d: event %d = %+v, want %+v", cut, i, events[i], full[i])
			}
		}
		switch {
		case atBoundary && err != nil:
			t.Fatalf("cut at record boundary %d: %v", cut, err)
		case !atBoundary && !errors.Is(err, ErrTruncated):
			t.Fatalf("cut at %d: err = %v, want ErrTruncated", cut, err)
		}
	}

	// Through the file API, with a record cut in half: the error names it.
	cut := offsets[3] + 20
	events, err := ReadEvents(writeTemp(t, data[:cut]))
	if len(events) != 3 || !errors.Is(err, ErrTruncated) {
		t.Fatalf("%d events, err %v; want 3 and ErrTruncated", len(events), err)
	}
	if want := "record 3 at offset " + strconv.Itoa(offsets[3]); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
}

// A record whose (CRC-valid) length exceeds the file is truncation, and
// costs no allocation of that length.
func TestReadEventsHugeLength(t *testing.T) {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, 1<<62)
	b = binary.LittleEndian.AppendUint32(b, maskedCRC(b))
	b = append(b, "short"...)
	_, err := readEvents(bytes.NewReader(b), int64(len(b)))
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
}

func TestDecodeEventErrors(t *testing.T) {
	for name, data := range map[string][]byte{
		"short double":      {0x09, 1, 2, 3},
		"wall_time varint":  {0x08, 0x01},
		"length past end":   {0x1a, 0x05, 'a'},
		"field number zero": {0x00, 0x01},
		"group":             {0x0b},
		"bad summary":       {0x2a, 0x02, 0x0a, 0x05},
	} {
		if _, err := decodeEvent(data); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Unknown fields are skipped.
	ev, err := decodeEvent([]byte{0x10, 0x07, 0x58, 0x01, 0x62, 0x01, 'x'})
	if err != nil || ev.Step != 7 {
		t.Errorf("unknown fields: %+v, %v", ev, err)
	}
}

func TestEncodeNegativeStep(t *testing.T) {
	data := encodeSummaryEvent(1, -3, encodeScalarValue("x", 0))
	ev, err := decodeEvent(data)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := ev.Scalars["x"]; ev.Step != -3 || !ok || v != 0 {
		t.Errorf("decoded %+v", ev)
	}
}
