package trainstate

import (
	"bytes"
	"github.com/tinct/tinct/model"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/control"
	"google.golang.org/protobuf/proto"
)

// trained is tinyState after steps commits of random gradients and
// buffers, so that the weights, EMA, buffers, count and Adam all differ
// from a fresh state's.
func trained(t testing.TB, seed uint64, steps int) *State {
	t.Helper()
	s := tinyState(t, control.Position{})
	rng := rand.New(rand.NewPCG(seed, 1))
	grad := make([]float32, s.Net.NumParams())
	for range steps {
		for i := range grad {
			grad[i] = float32(rng.NormFloat64())
		}
		bufs := s.Net.Buffers(nil)
		for i := range bufs {
			bufs[i] += float32(0.1 * rng.NormFloat64())
		}
		model.Commit(s.Net, s.EMA, s.Adam, s.Rule, grad, bufs, s.Net.BatchesTracked()+1)
	}
	return s
}

// copyReplica is r with its own slices and Adam.
func copyReplica(r Replica) Replica {
	c := r
	c.Params = append([]float32(nil), r.Params...)
	c.Buffers = append([]float32(nil), r.Buffers...)
	c.EMAParams = append([]float32(nil), r.EMAParams...)
	c.EMABuffers = append([]float32(nil), r.EMABuffers...)
	adam := *r.Adam
	adam.M = append([]float32(nil), r.Adam.M...)
	adam.V = append([]float32(nil), r.Adam.V...)
	c.Adam = &adam
	return c
}

// TestReplicaLoad: a state's Replica loaded into another state makes the
// two equal (Checksum); the loaded state keeps its own Adam constants.
func TestReplicaLoad(t *testing.T) {
	a, b := trained(t, 1, 3), trained(t, 2, 1)
	b.Adam.LR = 0.5
	if bytes.Equal(a.Checksum(), b.Checksum()) {
		t.Fatal("two differently trained states have equal checksums")
	}
	r := a.Replica()
	if err := b.LoadReplica(r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Checksum(), b.Checksum()) {
		t.Fatal("Load of a's Replica: checksum differs from a's")
	}
	if b.Adam.LR != 0.5 || b.Net.BatchesTracked() != 3 || b.EMA.BatchesTracked() != 3 || b.Adam.Step != 3 {
		t.Fatalf("after Load: lr %g, tracked %d (EMA %d), step %d; want 0.5, 3, 3, 3", b.Adam.LR, b.Net.BatchesTracked(), b.EMA.BatchesTracked(), b.Adam.Step)
	}
	// b holds copies: a's next commit leaves it alone.
	sum := b.Checksum()
	model.Commit(a.Net, a.EMA, a.Adam, a.Rule, make([]float32, a.Net.NumParams()), a.Net.Buffers(nil), a.Net.BatchesTracked()+1)
	if !bytes.Equal(b.Checksum(), sum) {
		t.Fatal("a commit of the state whose Replica was loaded changed the loading state")
	}
}

// TestReplicaLoadRefuses: a replica with any vector of the wrong length,
// no Adam, or a negative count or step is refused and changes nothing.
func TestReplicaLoadRefuses(t *testing.T) {
	a, b := trained(t, 1, 2), trained(t, 2, 1)
	good := copyReplica(a.Replica())
	sum := b.Checksum()
	for _, c := range []struct {
		what   string
		breaks func(r *Replica)
	}{
		{"short weights", func(r *Replica) { r.Params = r.Params[1:] }},
		{"long buffers", func(r *Replica) { r.Buffers = append(r.Buffers, 0) }},
		{"short EMA weights", func(r *Replica) { r.EMAParams = r.EMAParams[:len(r.EMAParams)-1] }},
		{"no EMA buffers", func(r *Replica) { r.EMABuffers = nil }},
		{"short Adam M", func(r *Replica) { r.Adam.M = r.Adam.M[1:] }},
		{"long Adam V", func(r *Replica) { r.Adam.V = append(r.Adam.V, 1) }},
		{"no Adam", func(r *Replica) { r.Adam = nil }},
		{"negative count", func(r *Replica) { r.Tracked = -1 }},
		{"negative step", func(r *Replica) { r.Adam.Step = -1 }},
	} {
		r := copyReplica(good)
		c.breaks(&r)
		if err := b.LoadReplica(r); err == nil {
			t.Errorf("%s: loaded", c.what)
		} else {
			t.Logf("%s: %v", c.what, err)
		}
		if !bytes.Equal(b.Checksum(), sum) {
			t.Fatalf("%s: a refused replica changed the state", c.what)
		}
	}
}

// TestReplicaWire: EncodeReplica → DecodeReplica gives the replica back
// bit for bit (Load makes the checksum the original's), with the
// constants and rule given; a nil message and wrong lengths are refused.
func TestReplicaWire(t *testing.T) {
	a, b := trained(t, 3, 2), trained(t, 4, 1)
	np, nb := a.Net.NumParams(), a.Net.NumBuffers()
	m := EncodeReplica(a.Replica())
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back cluster.ReplicaState
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	r, err := DecodeReplica(&back, np, nb, 0.25, 0.5, 0.75, 1e-6, a.Rule)
	if err != nil {
		t.Fatal(err)
	}
	if r.Adam.LR != 0.25 || r.Adam.Beta1 != 0.5 || r.Adam.Beta2 != 0.75 || r.Adam.Eps != 1e-6 || r.Rule != a.Rule {
		t.Fatalf("decoded constants %+v, rule %+v", *r.Adam, r.Rule)
	}
	if err := b.LoadReplica(r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Checksum(), b.Checksum()) {
		t.Fatal("the decoded replica is not the encoded one")
	}

	if _, err := DecodeReplica(nil, np, nb, 0, 0, 0, 0, a.Rule); err == nil {
		t.Error("decoded a nil message")
	}
	for _, c := range []struct {
		what   string
		breaks func(m *cluster.ReplicaState)
	}{
		{"weights", func(m *cluster.ReplicaState) { m.Params = m.Params[4:] }},
		{"buffers", func(m *cluster.ReplicaState) { m.Buffers = append(m.Buffers, 0) }},
		{"Adam M", func(m *cluster.ReplicaState) { m.AdamM = m.AdamM[:len(m.AdamM)-1] }},
		{"Adam V", func(m *cluster.ReplicaState) { m.AdamV = nil }},
		{"EMA weights", func(m *cluster.ReplicaState) { m.EmaParams = m.EmaParams[4:] }},
		{"EMA buffers", func(m *cluster.ReplicaState) { m.EmaBuffers = m.EmaBuffers[:2] }},
		{"count", func(m *cluster.ReplicaState) { m.Tracked = -1 }},
		{"step", func(m *cluster.ReplicaState) { m.AdamStep = math.MinInt64 }},
	} {
		bad := proto.Clone(m).(*cluster.ReplicaState)
		c.breaks(bad)
		if _, err := DecodeReplica(bad, np, nb, 0, 0, 0, 0, a.Rule); err == nil {
			t.Errorf("decoded a replica state with bad %s", c.what)
		}
	}
}

// FuzzDecodeReplica decodes the fuzzer's bytes as a ReplicaState message
// for a network of params weights and buffers statistics. DecodeReplica
// must never panic; what it accepts has every vector at its length and
// encodes back to the same vectors.
func FuzzDecodeReplica(f *testing.F) {
	s := tinyState(f, control.Position{})
	np, nb := s.Net.NumParams(), s.Net.NumBuffers()
	good, err := proto.Marshal(EncodeReplica(s.Replica()))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, np, nb)
	f.Add(good, np+1, nb)
	f.Add(good[:len(good)/2], np, nb)
	f.Add([]byte{}, 0, 0)
	f.Add([]byte{}, -1, 3)
	small, _ := proto.Marshal(&cluster.ReplicaState{Params: make([]byte, 8), AdamM: make([]byte, 8), AdamV: make([]byte, 8), EmaParams: make([]byte, 8), Tracked: 2})
	f.Add(small, 2, 0)
	f.Fuzz(func(t *testing.T, b []byte, params, buffers int) {
		var m cluster.ReplicaState
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		r, err := DecodeReplica(&m, params, buffers, 1e-3, 0.9, 0.999, 1e-8, s.Rule)
		if err != nil {
			return
		}
		if len(r.Params) != params || len(r.EMAParams) != params || len(r.Adam.M) != params || len(r.Adam.V) != params ||
			len(r.Buffers) != buffers || len(r.EMABuffers) != buffers || r.Tracked < 0 || r.Adam.Step < 0 {
			t.Fatalf("accepted a replica of the wrong shape for %d weights and %d buffers", params, buffers)
		}
		e := EncodeReplica(r)
		if !bytes.Equal(e.Params, m.Params) || !bytes.Equal(e.Buffers, m.Buffers) || !bytes.Equal(e.AdamM, m.AdamM) ||
			!bytes.Equal(e.AdamV, m.AdamV) || !bytes.Equal(e.EmaParams, m.EmaParams) || !bytes.Equal(e.EmaBuffers, m.EmaBuffers) ||
			e.Tracked != m.Tracked || e.AdamStep != m.AdamStep {
			t.Fatal("DecodeReplica → EncodeReplica changed the message")
		}
	})
}
