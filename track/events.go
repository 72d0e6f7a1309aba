package track

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Event is one record of an event file, decoded.
type Event struct {
	WallTime    float64 // seconds since the Unix epoch
	Step        int64
	FileVersion string // "brain.Event:2" in a file's first record, else empty

	// Scalars maps tag to value for the summary's scalar values: simple_value
	// (float32, as this package writes them) or a one-element float tensor
	// (as TensorFlow 2 writes them). Nil when there are none.
	Scalars map[string]float64
	// Images maps tag to image for the summary's image values. Nil when
	// there are none.
	Images map[string]ImageSummary
}

// ImageSummary is a Summary.Image: an encoded image and its dimensions.
type ImageSummary struct {
	Height, Width int
	Colorspace    int    // 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
	PNG           []byte // the encoded image (PNG for this package's files)
}

// Errors that ReadEvents wraps; test for them with errors.Is.
var (
	// ErrTruncated means the file ends inside a record, as when the writer
	// crashed mid-write or the file is still being written.
	ErrTruncated = errors.New("truncated record")
	// ErrCorrupt means a record fails a CRC check or does not decode.
	ErrCorrupt = errors.New("corrupt record")
)

// Record framing sizes: uint64 length, uint32 length CRC, then data, then a
// uint32 data CRC.
const (
	recordHeaderLen = 12
	recordFooterLen = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC is the masked CRC-32C that TFRecord framing stores.
func maskedCRC(b []byte) uint32 {
	crc := crc32.Checksum(b, castagnoli)
	return (crc>>15 | crc<<17) + 0xa282ead8
}

// appendRecord appends data framed as a TFRecord.
func appendRecord(b, data []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	b = binary.LittleEndian.AppendUint32(b, maskedCRC(b[start:]))
	b = append(b, data...)
	return binary.LittleEndian.AppendUint32(b, maskedCRC(data))
}

// ReadEvents reads the event file at path, checking the length CRC and the
// data CRC of every record, and decodes each record's Event.
//
// It always returns the events of the complete, valid records from the start
// of the file, in order, so events[i] is record i (record 0 holds the
// file_version). If it stops early the error says why and names the record
// by index and byte offset: it wraps ErrTruncated when the file ends inside
// a record (a crash; the events returned are then everything that was
// written completely), ErrCorrupt when a record fails a CRC check or does
// not decode, or an I/O error. A file that ends exactly at a record boundary
// reads without error.
func ReadEvents(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("track: read events: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("track: read events: %w", err)
	}
	events, err := readEvents(bufio.NewReaderSize(f, 64<<10), st.Size())
	if err != nil {
		return events, fmt.Errorf("track: read events %s: %w", path, err)
	}
	return events, nil
}

// readEvents reads records from r, which holds size bytes.
func readEvents(r io.Reader, size int64) ([]Event, error) {
	var (
		events []Event
		off    int64
		header [recordHeaderLen]byte
	)
	for i := 0; ; i++ {
		n, err := io.ReadFull(r, header[:])
		switch {
		case err == io.EOF:
			return events, nil
		case err == io.ErrUnexpectedEOF:
			return events, fmt.Errorf("record %d at offset %d: %w: file ends %d bytes into its %d-byte header",
				i, off, ErrTruncated, n, recordHeaderLen)
		case err != nil:
			return events, fmt.Errorf("record %d at offset %d: %w", i, off, err)
		}
		stored, computed := binary.LittleEndian.Uint32(header[8:]), maskedCRC(header[:8])
		if stored != computed {
			return events, fmt.Errorf("record %d at offset %d: %w: length CRC mismatch (stored %#08x, computed %#08x)",
				i, off, ErrCorrupt, stored, computed)
		}
		length := binary.LittleEndian.Uint64(header[:8])
		// The length is now trusted; compare it with what the file holds
		// before allocating, so a huge record cut short costs nothing.
		left := uint64(max(size-off-recordHeaderLen, 0))
		if length > left || left-length < recordFooterLen {
			return events, fmt.Errorf("record %d at offset %d: %w: file ends %d bytes into its %d bytes of data and CRC",
				i, off, ErrTruncated, left, length+recordFooterLen)
		}
		buf := make([]byte, length+recordFooterLen)
		if _, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = ErrTruncated // the file shrank while we read it
			}
			return events, fmt.Errorf("record %d at offset %d: %w", i, off, err)
		}
		data := buf[:length]
		stored, computed = binary.LittleEndian.Uint32(buf[length:]), maskedCRC(data)
		if stored != computed {
			return events, fmt.Errorf("record %d at offset %d: %w: data CRC mismatch (stored %#08x, computed %#08x)",
				i, off, ErrCorrupt, stored, computed)
		}
		ev, err := decodeEvent(data)
		if err != nil {
			return events, fmt.Errorf("record %d at offset %d: %w: %w", i, off, ErrCorrupt, err)
		}
		events = append(events, ev)
		off += recordHeaderLen + int64(length) + recordFooterLen
	}
}
