package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
)

// Network is what the checksums read of a network (*model.UNet is one).
type Network interface {
	// Hash writes the weights, then the BatchNorm buffers, to h as
	// little-endian float32, read where the network keeps them.
	Hash(h hash.Hash)
	// BatchesTracked is the BatchNorm batch count.
	BatchesTracked() int64
}

// Optimizer is what StateChecksum reads of the optimizer itself
// (*model.Adam is one).
type Optimizer interface {
	StepCount() int64 // optimizer steps taken
}

// Replica is a network that also hashes its optimizer's moments, M then V
// as little-endian float32, read where it keeps them (*model.UNet with
// *model.Adam).
type Replica[O Optimizer] interface {
	Network
	HashAdam(h hash.Hash, opt O)
}

// EncodeFloats encodes v as little-endian float32.
func EncodeFloats(v ...[]float32) []byte {
	n := 0
	for _, s := range v {
		n += len(s)
	}
	b := make([]byte, 0, 4*n)
	for _, s := range v {
		for _, f := range s {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
	}
	return b
}

// DecodeFloats fills dst from little-endian float32 bytes of exactly its length.
func DecodeFloats(dst []float32, b []byte) error {
	if len(b) != 4*len(dst) {
		return fmt.Errorf("cluster: vector of %d bytes, want %d floats", len(b), len(dst))
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return nil
}

// Checksum is the SHA-256 of a network's weights, BatchNorm buffers and
// batch count (replicas that agree bitwise have equal checksums): the
// little-endian float32 weights, then buffers, then the count as a
// little-endian uint64. The floats are hashed where the network's backend
// keeps them (model.UNet.Hash; on a little-endian host in place, with no
// 7.8 MB encoded copy: 4.5 ms instead of 7.0 ms for the full network,
// BenchmarkChecksum).
func Checksum(net Network) []byte {
	h := sha256.New()
	net.Hash(h)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(net.BatchesTracked()))
	h.Write(b[:])
	return h.Sum(nil)
}

// StateChecksum is the SHA-256 of a replica's whole state, which workers
// report at snapshot steps and the coordinator checks a snapshot against:
// equal iff the weights, BatchNorm buffers and batch count, the EMA's
// weights, buffers and count, and Adam's moments and step agree bitwise.
// It hashes the 32 bytes of Checksum(net), then the EMA network
// (model.UNet.Hash) and its batch count as a little-endian uint64, then
// Adam's moments where net keeps them (model.UNet.HashAdam: M then V as
// little-endian float32), then Adam's step as a little-endian uint64.
func StateChecksum[O Optimizer](net Replica[O], ema Network, opt O) []byte {
	h := sha256.New()
	h.Write(Checksum(net))
	var b [8]byte
	ema.Hash(h)
	binary.LittleEndian.PutUint64(b[:], uint64(ema.BatchesTracked()))
	h.Write(b[:])
	net.HashAdam(h, opt)
	binary.LittleEndian.PutUint64(b[:], uint64(opt.StepCount()))
	h.Write(b[:])
	return h.Sum(nil)
}
