// Package le holds the one view of float32 vectors as the little-endian
// bytes that the ring's wire format and the replicas' checksums are defined
// in: on little-endian hosts (all that tinct runs on) a vector's own memory
// is those bytes, and callers encode only where Host is false.
package le

import "unsafe"

// Host says whether this machine stores numbers little-endian. A variable,
// so that tests can take the encoding paths.
var Host = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// Bytes is v's own memory as bytes: its little-endian encoding when Host.
func Bytes(v []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}

// Floats views b as float32s when that is safe (Host, and b 4-byte
// aligned), else returns nil.
func Floats(b []byte) []float32 {
	if !Host || len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}
