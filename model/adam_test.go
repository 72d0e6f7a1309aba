package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// leFloats is v as little-endian float32 bytes (cluster.EncodeFloats, which this
// package cannot import).
func leFloats(v ...[]float32) []byte {
	var b []byte
	for _, s := range v {
		for _, f := range s {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
	}
	return b
}

// randomAdam is Adam for n weights with moments drawn from rng (V ≥ 0).
func randomAdam(n int, rng *rand.Rand) *Adam {
	opt := NewAdam(n, 1e-3)
	for i := range opt.M {
		opt.M[i] = float32(0.01 * rng.NormFloat64())
		opt.V[i] = float32(1e-4 * rng.Float64())
	}
	opt.Step = 5
	return opt
}

// TestReadAdamRoundTrip: after LoadAdam and a step of Apply, ReadAdam gives
// the moments the network now holds (what HashAdam hashes, moved by the
// step), and loading them into another network gives the same moments.
func TestReadAdamRoundTrip(t *testing.T) {
	u := onBackend(t, tinyNet(t, 3))
	rng := rand.New(rand.NewPCG(3, 4))
	opt := randomAdam(u.NumParams(), rng)
	before := leFloats(opt.M, opt.V)
	if err := u.LoadAdam(opt); err != nil {
		t.Fatal(err)
	}
	grad := make([]float32, u.NumParams())
	for i := range grad {
		grad[i] = float32(rng.NormFloat64())
	}
	u.Apply(opt, grad, u.Buffers(nil), u.BatchesTracked()+1)

	read := *opt
	if u.OnDevice() {
		read.M, read.V = make([]float32, len(opt.M)), make([]float32, len(opt.V))
	}
	u.ReadAdam(&read)
	if err := u.Err(); err != nil {
		t.Fatal(err)
	}
	if read.Step != 6 {
		t.Fatalf("Adam step %d after one Apply from 5, want 6", read.Step)
	}
	got := leFloats(read.M, read.V)
	if bytes.Equal(got, before) {
		t.Fatal("ReadAdam gave the moments as loaded, not as the step left them")
	}
	h := sha256.New()
	u.HashAdam(h, opt)
	if want := sha256.Sum256(got); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("HashAdam of the network's moments differs from the hash of what ReadAdam gave")
	}

	v := copyOnBackend(t, u)
	if err := v.LoadAdam(&read); err != nil {
		t.Fatal(err)
	}
	back := read
	back.M, back.V = make([]float32, len(read.M)), make([]float32, len(read.V))
	if v.OnDevice() {
		v.ReadAdam(&back)
	} else {
		copy(back.M, read.M)
		copy(back.V, read.V)
	}
	if err := v.Err(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leFloats(back.M, back.V), got) {
		t.Fatal("moments changed through LoadAdam → ReadAdam")
	}
}

// TestHashAdamDefinition: HashAdam is the SHA-256 input M then V as
// little-endian float32 bytes, the same on a host network and on the
// backend the suite runs on (a device's own copy of the moments).
func TestHashAdamDefinition(t *testing.T) {
	host := tinyNet(t, 4)
	opt := randomAdam(host.NumParams(), rand.New(rand.NewPCG(7, 8)))
	want := sha256.Sum256(leFloats(opt.M, opt.V))
	for _, u := range []*UNet{host, onBackend(t, host)} {
		if err := u.LoadAdam(opt); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		u.HashAdam(h, opt)
		if err := u.Err(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("HashAdam (device %t) = %x, want %x", u.OnDevice(), h.Sum(nil), want)
		}
	}
}
