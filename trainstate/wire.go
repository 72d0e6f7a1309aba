package trainstate

import (
	"errors"
	"fmt"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/model"
)

// EncodeReplica is r as its message (cluster.ReplicaState: little-endian
// float32 vectors). Adam's learning rate, betas and epsilon and the EMA
// rule are not part of it (a Setup carries them beside it).
func EncodeReplica(r Replica) *cluster.ReplicaState {
	m := &cluster.ReplicaState{Params: cluster.EncodeFloats(r.Params), Buffers: cluster.EncodeFloats(r.Buffers), Tracked: r.Tracked,
		EmaParams: cluster.EncodeFloats(r.EMAParams), EmaBuffers: cluster.EncodeFloats(r.EMABuffers)}
	if r.Adam != nil {
		m.AdamM, m.AdamV, m.AdamStep = cluster.EncodeFloats(r.Adam.M), cluster.EncodeFloats(r.Adam.V), r.Adam.Step
	}
	return m
}

// DecodeReplica is the replica m encodes, for a network of params weights
// and buffers BatchNorm statistics, with Adam's constants and the EMA rule
// given (they travel beside the message, or are the receiver's own). Every
// vector must have its length (the weights, the EMA's and both moments
// params floats; both buffer vectors buffers floats), and the batch count
// and Adam's step must not be negative; anything else (a nil message
// included) is an error. The slices are fresh.
func DecodeReplica(m *cluster.ReplicaState, params, buffers int, lr, beta1, beta2, eps float64, rule model.EMA) (Replica, error) {
	if m == nil {
		return Replica{}, errors.New("no replica state in the message")
	}
	if params < 0 || buffers < 0 {
		return Replica{}, fmt.Errorf("replica state for a network of %d weights and %d buffers", params, buffers)
	}
	if m.Tracked < 0 || m.AdamStep < 0 {
		return Replica{}, fmt.Errorf("replica state with %d batches tracked at Adam step %d", m.Tracked, m.AdamStep)
	}
	// Sizes are checked before anything is allocated: the message's bytes
	// are the sender's, the network's lengths are ours.
	for _, v := range []struct {
		what string
		b    []byte
		n    int
	}{
		{"weights", m.Params, params},
		{"buffers", m.Buffers, buffers},
		{"Adam's first moments", m.AdamM, params},
		{"Adam's second moments", m.AdamV, params},
		{"EMA weights", m.EmaParams, params},
		{"EMA buffers", m.EmaBuffers, buffers},
	} {
		if len(v.b)%4 != 0 || len(v.b)/4 != v.n {
			return Replica{}, fmt.Errorf("replica state: %s of %d bytes, want %d floats", v.what, len(v.b), v.n)
		}
	}
	r := Replica{Params: make([]float32, params), Buffers: make([]float32, buffers), Tracked: m.Tracked,
		Adam:      &model.Adam{LR: lr, Beta1: beta1, Beta2: beta2, Eps: eps, Step: m.AdamStep, M: make([]float32, params), V: make([]float32, params)},
		EMAParams: make([]float32, params), EMABuffers: make([]float32, buffers), Rule: rule}
	if err := errors.Join(
		cluster.DecodeFloats(r.Params, m.Params), cluster.DecodeFloats(r.Buffers, m.Buffers),
		cluster.DecodeFloats(r.Adam.M, m.AdamM), cluster.DecodeFloats(r.Adam.V, m.AdamV),
		cluster.DecodeFloats(r.EMAParams, m.EmaParams), cluster.DecodeFloats(r.EMABuffers, m.EmaBuffers)); err != nil {
		return Replica{}, fmt.Errorf("replica state: %w", err)
	}
	return r, nil
}
