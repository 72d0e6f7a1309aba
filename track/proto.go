package track

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The protocol buffer messages of TensorBoard event files, encoded and decoded
// by hand. Field numbers are those of TensorFlow's .proto files (identical in
// TensorBoard's copies under tensorboard/compat/proto/).

// tensorflow/core/util/event.proto, message Event.
const (
	eventWallTime    = 1 // double wall_time
	eventStep        = 2 // int64 step
	eventFileVersion = 3 // string file_version (oneof what)
	eventSummary     = 5 // Summary summary (oneof what)
)

// tensorflow/core/framework/summary.proto, message Summary and its nested
// messages Summary.Value and Summary.Image.
const (
	summaryValue = 1 // Summary: repeated Value value

	valueTag         = 1 // Value: string tag
	valueSimpleValue = 2 // Value: float simple_value (oneof value)
	valueImage       = 4 // Value: Image image (oneof value)
	valueTensor      = 8 // Value: TensorProto tensor (oneof value); read only

	imageHeight     = 1 // Image: int32 height
	imageWidth      = 2 // Image: int32 width
	imageColorspace = 3 // Image: int32 colorspace (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)
	imageEncoded    = 4 // Image: bytes encoded_image_string
)

// tensorflow/core/framework/tensor.proto, message TensorProto, and the
// DataType enum of tensorflow/core/framework/types.proto. Only read: this is
// how tf.summary.scalar in TensorFlow 2 stores a scalar, so ReadEvents
// understands files written by TensorFlow too.
const (
	tensorDtype     = 1 // DataType dtype
	tensorContent   = 4 // bytes tensor_content (little-endian values)
	tensorFloatVal  = 5 // repeated float float_val (packed)
	tensorDoubleVal = 6 // repeated double double_val (packed)

	dtFloat  = 1 // DT_FLOAT
	dtDouble = 2 // DT_DOUBLE
)

// Colorspace values of Summary.Image.
const (
	colorspaceGray = 1
	colorspaceRGB  = 3
	colorspaceRGBA = 4
)

// fileVersion is the file_version of an event file's first record.
const fileVersion = "brain.Event:2"

// Protocol buffer wire types.
type wireType uint8

const (
	wireVarint  wireType = 0
	wireFixed64 wireType = 1
	wireBytes   wireType = 2
	wireFixed32 wireType = 5
)

func appendKey(b []byte, num int, t wireType) []byte {
	return binary.AppendUvarint(b, uint64(num)<<3|uint64(t))
}

// appendVarintField appends an int32 or int64 field; negative values take ten
// bytes, as protobuf encodes them (not zigzag, which is only for sint types).
func appendVarintField(b []byte, num int, v int64) []byte {
	b = appendKey(b, num, wireVarint)
	return binary.AppendUvarint(b, uint64(v))
}

func appendDoubleField(b []byte, num int, v float64) []byte {
	b = appendKey(b, num, wireFixed64)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

func appendFloatField(b []byte, num int, v float32) []byte {
	b = appendKey(b, num, wireFixed32)
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
}

func appendBytesField(b []byte, num int, data []byte) []byte {
	b = appendKey(b, num, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}

// encodeFileVersionEvent encodes Event{wall_time, file_version}. Like
// TensorFlow's writer it omits step, which is zero.
func encodeFileVersionEvent(wallTime float64, version string) []byte {
	b := appendDoubleField(nil, eventWallTime, wallTime)
	return appendBytesField(b, eventFileVersion, []byte(version))
}

// encodeSummaryEvent encodes Event{wall_time, step, summary: Summary{value:
// values}}, where each element of values is an encoded Summary.Value. A zero
// step is omitted, as proto3 omits default scalars.
func encodeSummaryEvent(wallTime float64, step int64, values ...[]byte) []byte {
	var summary []byte
	for _, v := range values {
		summary = appendBytesField(summary, summaryValue, v)
	}
	b := appendDoubleField(nil, eventWallTime, wallTime)
	if step != 0 {
		b = appendVarintField(b, eventStep, step)
	}
	return appendBytesField(b, eventSummary, summary)
}

// encodeScalarValue encodes Summary.Value{tag, simple_value}. simple_value is
// written even when zero: it is a oneof member, whose presence matters.
func encodeScalarValue(tag string, v float32) []byte {
	b := appendBytesField(nil, valueTag, []byte(tag))
	return appendFloatField(b, valueSimpleValue, v)
}

// encodeImageValue encodes Summary.Value{tag, image: Summary.Image{...}}.
func encodeImageValue(tag string, height, width, colorspace int, png []byte) []byte {
	img := appendVarintField(nil, imageHeight, int64(int32(height)))
	img = appendVarintField(img, imageWidth, int64(int32(width)))
	img = appendVarintField(img, imageColorspace, int64(colorspace))
	img = appendBytesField(img, imageEncoded, png)
	b := appendBytesField(nil, valueTag, []byte(tag))
	return appendBytesField(b, valueImage, img)
}

// field is one decoded protocol buffer field: u holds varint and fixed-size
// values, data the payload of a length-delimited one.
type field struct {
	num  int
	typ  wireType
	u    uint64
	data []byte
}

var errShort = errors.New("unexpected end of message")

// nextField decodes the field at the start of b and returns it and the rest.
func nextField(b []byte) (field, []byte, error) {
	key, n := binary.Uvarint(b)
	if n <= 0 {
		return field{}, nil, fmt.Errorf("bad field key: %w", errShort)
	}
	b = b[n:]
	f := field{num: int(key >> 3), typ: wireType(key & 7)}
	if key>>3 == 0 || key>>3 > math.MaxInt32 {
		return field{}, nil, fmt.Errorf("invalid field number %d", key>>3)
	}
	switch f.typ {
	case wireVarint:
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return field{}, nil, fmt.Errorf("field %d: bad varint", f.num)
		}
		f.u, b = v, b[n:]
	case wireFixed64:
		if len(b) < 8 {
			return field{}, nil, fmt.Errorf("field %d: %w", f.num, errShort)
		}
		f.u, b = binary.LittleEndian.Uint64(b), b[8:]
	case wireFixed32:
		if len(b) < 4 {
			return field{}, nil, fmt.Errorf("field %d: %w", f.num, errShort)
		}
		f.u, b = uint64(binary.LittleEndian.Uint32(b)), b[4:]
	case wireBytes:
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return field{}, nil, fmt.Errorf("field %d: bad length", f.num)
		}
		b = b[n:]
		if l > uint64(len(b)) {
			return field{}, nil, fmt.Errorf("field %d: length %d: %w", f.num, l, errShort)
		}
		f.data, b = b[:l], b[l:]
	default:
		// Groups (3, 4) are deprecated and absent from these messages.
		return field{}, nil, fmt.Errorf("field %d: unsupported wire type %d", f.num, f.typ)
	}
	return f, b, nil
}

// expect checks that a known field has the wire type its .proto declares.
func (f field) expect(t wireType) error {
	if f.typ != t {
		return fmt.Errorf("field %d: wire type %d, want %d", f.num, f.typ, t)
	}
	return nil
}

// decodeEvent decodes an Event, skipping fields this package does not use.
func decodeEvent(b []byte) (Event, error) {
	var ev Event
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return Event{}, fmt.Errorf("Event: %w", err)
		}
		b = rest
		switch f.num {
		case eventWallTime:
			if err := f.expect(wireFixed64); err != nil {
				return Event{}, fmt.Errorf("Event.wall_time: %w", err)
			}
			ev.WallTime = math.Float64frombits(f.u)
		case eventStep:
			if err := f.expect(wireVarint); err != nil {
				return Event{}, fmt.Errorf("Event.step: %w", err)
			}
			ev.Step = int64(f.u)
		case eventFileVersion:
			if err := f.expect(wireBytes); err != nil {
				return Event{}, fmt.Errorf("Event.file_version: %w", err)
			}
			ev.FileVersion = string(f.data)
		case eventSummary:
			if err := f.expect(wireBytes); err != nil {
				return Event{}, fmt.Errorf("Event.summary: %w", err)
			}
			if err := decodeSummary(f.data, &ev); err != nil {
				return Event{}, fmt.Errorf("Event.summary: %w", err)
			}
		}
	}
	return ev, nil
}

func decodeSummary(b []byte, ev *Event) error {
	for i := 0; len(b) > 0; {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		if f.num != summaryValue {
			continue
		}
		if err := f.expect(wireBytes); err != nil {
			return fmt.Errorf("value[%d]: %w", i, err)
		}
		if err := decodeValue(f.data, ev); err != nil {
			return fmt.Errorf("value[%d]: %w", i, err)
		}
		i++
	}
	return nil
}

// decodeValue decodes a Summary.Value into ev.Scalars or ev.Images. Values of
// other kinds (histograms, audio, non-scalar tensors) are ignored.
func decodeValue(b []byte, ev *Event) error {
	var (
		tag       string
		scalar    float64
		hasScalar bool
		img       *ImageSummary
	)
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		switch f.num {
		case valueTag:
			if err := f.expect(wireBytes); err != nil {
				return fmt.Errorf("tag: %w", err)
			}
			tag = string(f.data)
		case valueSimpleValue:
			if err := f.expect(wireFixed32); err != nil {
				return fmt.Errorf("simple_value: %w", err)
			}
			scalar, hasScalar = float64(math.Float32frombits(uint32(f.u))), true
		case valueImage:
			if err := f.expect(wireBytes); err != nil {
				return fmt.Errorf("image: %w", err)
			}
			im, err := decodeImage(f.data)
			if err != nil {
				return fmt.Errorf("image: %w", err)
			}
			img = &im
		case valueTensor:
			if err := f.expect(wireBytes); err != nil {
				return fmt.Errorf("tensor: %w", err)
			}
			v, ok, err := decodeScalarTensor(f.data)
			if err != nil {
				return fmt.Errorf("tensor: %w", err)
			}
			if ok {
				scalar, hasScalar = v, true
			}
		}
	}
	if hasScalar {
		if ev.Scalars == nil {
			ev.Scalars = make(map[string]float64)
		}
		ev.Scalars[tag] = scalar
	}
	if img != nil {
		if ev.Images == nil {
			ev.Images = make(map[string]ImageSummary)
		}
		ev.Images[tag] = *img
	}
	return nil
}

func decodeImage(b []byte) (ImageSummary, error) {
	var im ImageSummary
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return ImageSummary{}, err
		}
		b = rest
		switch f.num {
		case imageHeight, imageWidth, imageColorspace:
			if err := f.expect(wireVarint); err != nil {
				return ImageSummary{}, err
			}
			v := int(int32(f.u))
			switch f.num {
			case imageHeight:
				im.Height = v
			case imageWidth:
				im.Width = v
			default:
				im.Colorspace = v
			}
		case imageEncoded:
			if err := f.expect(wireBytes); err != nil {
				return ImageSummary{}, err
			}
			im.PNG = f.data
		}
	}
	return im, nil
}

// decodeScalarTensor returns the value of a TensorProto holding exactly one
// float32 or float64; ok is false for any other tensor.
func decodeScalarTensor(b []byte) (v float64, ok bool, err error) {
	var (
		dtype  uint64
		values []float64
		raw    []byte
	)
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return 0, false, err
		}
		b = rest
		switch {
		case f.num == tensorDtype && f.typ == wireVarint:
			dtype = f.u
		case f.num == tensorContent && f.typ == wireBytes:
			raw = f.data
		case f.num == tensorFloatVal && f.typ == wireFixed32:
			values = append(values, float64(math.Float32frombits(uint32(f.u))))
		case f.num == tensorFloatVal && f.typ == wireBytes:
			for p := f.data; len(p) >= 4; p = p[4:] {
				values = append(values, float64(math.Float32frombits(binary.LittleEndian.Uint32(p))))
			}
		case f.num == tensorDoubleVal && f.typ == wireFixed64:
			values = append(values, math.Float64frombits(f.u))
		case f.num == tensorDoubleVal && f.typ == wireBytes:
			for p := f.data; len(p) >= 8; p = p[8:] {
				values = append(values, math.Float64frombits(binary.LittleEndian.Uint64(p)))
			}
		}
	}
	switch {
	case dtype == dtFloat && raw != nil && len(raw) == 4:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(raw))), true, nil
	case dtype == dtDouble && raw != nil && len(raw) == 8:
		return math.Float64frombits(binary.LittleEndian.Uint64(raw)), true, nil
	case (dtype == dtFloat || dtype == dtDouble) && raw == nil && len(values) == 1:
		return values[0], true, nil
	}
	return 0, false, nil
}
