package model

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"unicode/utf8"
)

// StoredTensor is one named array of a safetensors file. Data holds the raw
// little-endian bytes.
type StoredTensor struct {
	DType string
	Shape []int
	Data  []byte
}

// F32 wraps float32 values as a tensor of the given shape.
func F32(v []float32, shape ...int) StoredTensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return StoredTensor{DType: "F32", Shape: shape, Data: b}
}

// I64 wraps an int64 scalar (shape []), as PyTorch stores num_batches_tracked.
func I64(v int64) StoredTensor {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(v))
	return StoredTensor{DType: "I64", Shape: []int{}, Data: b}
}

// Float32s decodes an F32 tensor.
func (t StoredTensor) Float32s() ([]float32, error) {
	if t.DType != "F32" {
		return nil, fmt.Errorf("dtype %s, want F32", t.DType)
	}
	v := make([]float32, len(t.Data)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return v, nil
}

// Int64 decodes an I64 scalar.
func (t StoredTensor) Int64() (int64, error) {
	if t.DType != "I64" || len(t.Data) != 8 {
		return 0, fmt.Errorf("dtype %s shape %v, want an I64 scalar", t.DType, t.Shape)
	}
	return int64(binary.LittleEndian.Uint64(t.Data)), nil
}

var dtypeSize = map[string]int{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

type headerEntry struct {
	DType   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets [2]int `json:"data_offsets"`
}

// metadataKey is the header entry that holds the metadata, not a tensor.
const metadataKey = "__metadata__"

// tensorBytes is the byte size of a tensor of shape whose elements take
// size bytes; ok is false for a negative dimension or a size beyond int.
func tensorBytes(size int, shape []int) (n int, ok bool) {
	n = size
	for _, d := range shape {
		if d < 0 || d > 0 && n > math.MaxInt/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// maxHeader bounds the JSON header a reader accepts (the format's own limit).
const maxHeader = 100 << 20

// WriteSafetensors writes tensors (in name order) and optional metadata.
func WriteSafetensors(w io.Writer, tensors map[string]StoredTensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for name := range tensors {
		names = append(names, name)
	}
	sort.Strings(names)
	header := map[string]any{}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("metadata %q=%q: not valid UTF-8", k, v)
		}
	}
	if len(metadata) > 0 {
		header[metadataKey] = metadata
	}
	off := 0
	for _, name := range names {
		t := tensors[name]
		size, ok := dtypeSize[t.DType]
		if !ok {
			return fmt.Errorf("tensor %s: unknown dtype %q", name, t.DType)
		}
		if name == metadataKey || !utf8.ValidString(name) {
			return fmt.Errorf("tensor %q: not a name a safetensors header can hold", name)
		}
		want, ok := tensorBytes(size, t.Shape)
		if !ok {
			return fmt.Errorf("tensor %s: shape %v of %s: a dimension is negative or the size overflows", name, t.Shape, t.DType)
		}
		if len(t.Data) != want {
			return fmt.Errorf("tensor %s: %d bytes for shape %v of %s (want %d)", name, len(t.Data), t.Shape, t.DType, want)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[name] = headerEntry{DType: t.DType, Shape: shape, Offsets: [2]int{off, off + len(t.Data)}}
		off += len(t.Data)
	}
	js, err := json.Marshal(header)
	if err != nil {
		return err
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, []byte(strings.Repeat(" ", pad))...)
	}
	bw := bufio.NewWriter(w)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(js)))
	bw.Write(n[:])
	bw.Write(js)
	for _, name := range names {
		bw.Write(tensors[name].Data)
	}
	return bw.Flush()
}

// ReadSafetensors reads a whole safetensors stream, checking that every
// tensor's offsets are consistent with its dtype and shape and lie in the file.
func ReadSafetensors(r io.Reader) (map[string]StoredTensor, map[string]string, error) {
	var n [8]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, nil, fmt.Errorf("safetensors header length: %w", err)
	}
	hl := binary.LittleEndian.Uint64(n[:])
	if hl > maxHeader {
		return nil, nil, fmt.Errorf("safetensors header of %d bytes: not a safetensors file or corrupt", hl)
	}
	// Read the header through a limit rather than into a buffer of the
	// length it claims, so that a short file claiming a long header costs
	// what it holds, not the claim.
	hb, err := io.ReadAll(io.LimitReader(r, int64(hl)))
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors header: %w", err)
	}
	if uint64(len(hb)) != hl {
		return nil, nil, fmt.Errorf("safetensors header: %w (%d of %d bytes)", io.ErrUnexpectedEOF, len(hb), hl)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return nil, nil, fmt.Errorf("safetensors header: %w", err)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors data: %w", err)
	}
	var meta map[string]string
	tensors := map[string]StoredTensor{}
	for name, msg := range raw {
		if name == metadataKey {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, fmt.Errorf("safetensors metadata: %w", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		size, ok := dtypeSize[e.DType]
		if !ok {
			return nil, nil, fmt.Errorf("tensor %s: unknown dtype %q", name, e.DType)
		}
		b, end := e.Offsets[0], e.Offsets[1]
		if want, ok := tensorBytes(size, e.Shape); !ok || b < 0 || end < b || end > len(body) || end-b != want {
			return nil, nil, fmt.Errorf("tensor %s: offsets %v do not fit shape %v of %s in %d data bytes (file truncated or corrupt)", name, e.Offsets, e.Shape, e.DType, len(body))
		}
		tensors[name] = StoredTensor{DType: e.DType, Shape: e.Shape, Data: body[b:end:end]}
	}
	return tensors, meta, nil
}

// SaveFile writes tensors to path atomically (temporary file, then rename).
func SaveFile(path string, tensors map[string]StoredTensor, metadata map[string]string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := WriteSafetensors(f, tensors, metadata); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// LoadFile reads a safetensors file.
func LoadFile(path string) (map[string]StoredTensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	t, m, err := ReadSafetensors(bufio.NewReader(f))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, m, nil
}

// StateDict returns the weights and BatchNorm buffers under PyTorch's names
// (read from the device on a device network).
func (u *UNet) StateDict() map[string]StoredTensor {
	sd := map[string]StoredTensor{}
	params, bufs := u.ReadParams(nil), u.Buffers(nil)
	for _, p := range u.Layout {
		sd[p.Name] = F32(params[p.Offset:p.Offset+p.Size()], p.Shape...)
	}
	for _, b := range u.Blocks() {
		sd[b.Name+".norm.running_mean"] = F32(bufs[:b.In], b.In)
		sd[b.Name+".norm.running_var"] = F32(bufs[b.In:2*b.In], b.In)
		sd[b.Name+".norm.num_batches_tracked"] = I64(b.Norm.NumBatchesTracked)
		bufs = bufs[2*b.In:]
	}
	return sd
}

// LoadStateDict sets weights and buffers from sd, which must hold exactly
// the network's tensors with their shapes (as PyTorch's strict loading).
// Nothing is changed when it fails.
func (u *UNet) LoadStateDict(sd map[string]StoredTensor) error {
	want := u.StateDict()
	var errs []error
	for _, name := range sortedKeys(want) {
		got, ok := sd[name]
		w := want[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("missing tensor %s %v", name, w.Shape))
		case got.DType != w.DType:
			errs = append(errs, fmt.Errorf("tensor %s: dtype %s, want %s", name, got.DType, w.DType))
		case !sameShape(got.Shape, w.Shape):
			errs = append(errs, fmt.Errorf("tensor %s: shape %v, want %v", name, got.Shape, w.Shape))
		}
	}
	for _, name := range sortedKeys(sd) {
		if _, ok := want[name]; !ok {
			errs = append(errs, fmt.Errorf("unexpected tensor %s %v", name, sd[name].Shape))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("state dict does not fit the network (widths %v, depth %d): %w", u.Widths, u.BlockDepth, errors.Join(errs...))
	}
	params := make([]float32, u.NumParams())
	for _, p := range u.Layout {
		v, _ := sd[p.Name].Float32s()
		copy(params[p.Offset:], v)
	}
	bufs := make([]float32, 0, u.NumBuffers())
	for _, b := range u.Blocks() {
		m, _ := sd[b.Name+".norm.running_mean"].Float32s()
		v, _ := sd[b.Name+".norm.running_var"].Float32s()
		k, _ := sd[b.Name+".norm.num_batches_tracked"].Int64()
		bufs = append(append(bufs, m...), v...)
		b.Norm.NumBatchesTracked = k
	}
	u.LoadParams(params)
	u.compute().Upload(u.Bufs, bufs)
	return u.Err()
}

func sortedKeys(m map[string]StoredTensor) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
