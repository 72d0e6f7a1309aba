// Package track records a training run: scalar metrics and sample images,
// written both as JSON lines and as a TensorBoard event file, plus image
// helpers (tensor to image, grids, atomic PNG files) and a progress line for
// long loops.
//
// A Writer opened on a run directory dir produces:
//
//	dir/metrics.jsonl                      one JSON object per line, appended
//	dir/events.out.tfevents.<unix>.<host>  TensorBoard event file, one per Open
//	dir/images/<tag>-<step>.png            every logged image, tag's "/" → "_"
//
// # metrics.jsonl
//
// Scalars are written as
//
//	{"time":"2025-01-02T03:04:05.123456789Z","tag":"loss/step","step":12,"value":0.0412}
//
// and images as
//
//	{"time":"…","tag":"samples/val","step":12,"image":"images/samples_val-00000012.png"}
//
// where "image" is relative to dir and uses forward slashes. A value that is
// not a finite number is written as the JSON string "NaN", "+Inf" or "-Inf",
// since JSON has no number for it. Opening an existing directory appends, so
// a resumed run keeps one metrics file.
//
// # Event files
//
// The event file is a sequence of TFRecords:
//
//	uint64 length (little-endian)
//	uint32 masked CRC-32C of the 8 length bytes
//	byte   data[length]
//	uint32 masked CRC-32C of data
//
// with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8. Each record's
// data is a serialized tensorflow.Event protocol buffer, encoded by hand in
// this package (see proto.go for the field numbers and the .proto files they
// come from). The first record carries file_version "brain.Event:2"; every
// later one carries wall_time, step and a Summary with one Value: a
// simple_value (float32) for scalars, or a Summary.Image holding the PNG for
// images. TensorBoard reads every event file in a directory, so a resumed run
// simply adds a new file next to the old ones. ReadEvents parses such a file
// back, checking both CRCs of every record.
package track
