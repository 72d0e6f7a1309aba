package worker

import (
	"bytes"
	"context"
	"math"
	"testing"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

// reference is the committed state a coordinator would keep for the
// worker's replica: a copy of net with its EMA, on the worker's kind of
// backend (host memory, or one new instance of $TINCT_BACKEND's device
// holding both networks), updated with model.Commit.
type reference struct {
	net, ema *model.UNet
	opt      *model.Adam
	rule     model.EMA
}

func newReference(t *testing.T, w *Worker, host *model.UNet, rule model.EMA) *reference {
	t.Helper()
	r := &reference{opt: model.NewAdam(host.NumParams(), 1e-3), rule: rule}
	var be nn.Compute
	if w.net.OnDevice() {
		var err error
		if be, err = nn.EnvDevice(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(be.Close)
	}
	for _, p := range []**model.UNet{&r.net, &r.ema} {
		u, err := model.NewOn(be, host.Config)
		if err != nil {
			t.Fatal(err)
		}
		u.CopyFrom(host)
		*p = u
	}
	if err := r.net.LoadAdam(r.opt); err != nil {
		t.Fatal(err)
	}
	return r
}

// step runs one step on the worker (Compute, Apply with the share's own
// gradient and buffers, as a world of one reduces them) and commits the
// same values to the reference.
func (r *reference) step(t *testing.T, w *Worker, step int64) {
	t.Helper()
	res, err := w.Compute(context.Background(), Task{Step: step, Indices: []int{1, 6, 3}, Seed: 11, Flip: true})
	if err != nil {
		t.Fatal(err)
	}
	grads, bufs := append([]float32(nil), res.Grads...), append([]float32(nil), res.Buffers...)
	if err := w.Apply(grads, bufs, step+1); err != nil {
		t.Fatal(err)
	}
	model.Commit(r.net, r.ema, r.opt, r.rule, grads, bufs, step+1)
	if err := r.net.Err(); err != nil {
		t.Fatal(err)
	}
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d] = %g, want %g (bitwise)", what, i, got[i], want[i])
		}
	}
}

// stateOf is a fresh committed state (host networks) for w's network,
// loaded with r.
func stateOf(t *testing.T, w *Worker, r trainstate.Replica) *trainstate.State {
	t.Helper()
	s := &trainstate.State{Adam: model.NewAdam(w.net.NumParams(), 1e-3), Rule: r.Rule}
	var err error
	if s.Net, err = model.New(w.net.Config); err != nil {
		t.Fatal(err)
	}
	if s.EMA, err = model.New(w.net.Config); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadReplica(r); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSnapshot: after two steps the worker's whole state is what
// model.Commit makes of the same gradients (weights, buffers, count, EMA,
// Adam: bitwise); its Snapshot loaded into a committed state gives the
// worker's StateChecksum; and the snapshot is the worker's state at the
// time it was taken, whatever the worker does next.
func TestSnapshot(t *testing.T) {
	w, host := newWorker(t)
	t.Cleanup(w.Close)
	rule := model.EMA{Decay: 0.9, CopyBuffers: true} // newWorker's
	ref := newReference(t, w, host, rule)
	before := w.StateChecksum()
	for step := range int64(2) {
		ref.step(t, w, step)
	}
	if bytes.Equal(w.StateChecksum(), before) {
		t.Fatal("two steps left the state checksum as it was")
	}

	snap := w.Snapshot()
	if snap.Tracked != 2 || snap.Adam.Step != 2 || snap.Rule != rule {
		t.Fatalf("snapshot: tracked %d, Adam step %d, rule %+v; want 2, 2, %+v", snap.Tracked, snap.Adam.Step, snap.Rule, rule)
	}
	refAdam := *ref.opt
	if ref.net.OnDevice() {
		refAdam.M, refAdam.V = make([]float32, len(ref.opt.M)), make([]float32, len(ref.opt.V))
		ref.net.ReadAdam(&refAdam)
	}
	sameBits(t, "weight", snap.Params, ref.net.ReadParams(nil))
	sameBits(t, "buffer", snap.Buffers, ref.net.Buffers(nil))
	sameBits(t, "EMA weight", snap.EMAParams, ref.ema.ReadParams(nil))
	sameBits(t, "EMA buffer", snap.EMABuffers, ref.ema.Buffers(nil))
	sameBits(t, "Adam first moment", snap.Adam.M, refAdam.M)
	sameBits(t, "Adam second moment", snap.Adam.V, refAdam.V)
	if got, want := ref.ema.BatchesTracked(), int64(2); got != want {
		t.Fatalf("reference EMA tracked %d, want %d", got, want)
	}

	st := stateOf(t, w, snap)
	sum := w.StateChecksum()
	if !bytes.Equal(st.Checksum(), sum) {
		t.Fatalf("the loaded snapshot's checksum %x differs from the worker's %x", st.Checksum(), sum)
	}
	if !bytes.Equal(st.Checksum(), stateOf(t, w, w.Snapshot()).Checksum()) {
		t.Fatal("two snapshots of one state differ")
	}

	// The snapshot is a copy: a third step leaves it (and what it loads) alone.
	ref.step(t, w, 2)
	if bytes.Equal(w.StateChecksum(), sum) {
		t.Fatal("a third step left the state checksum as it was")
	}
	if !bytes.Equal(stateOf(t, w, snap).Checksum(), sum) {
		t.Fatal("the snapshot changed with the worker's next step")
	}
}

// TestLoadRefusesEMA: a state whose EMA vectors do not fit is refused.
func TestLoadRefusesEMA(t *testing.T) {
	w, _ := newWorker(t)
	t.Cleanup(w.Close)
	good := w.Snapshot()
	for _, c := range []struct {
		what   string
		breaks func(r *trainstate.Replica)
	}{
		{"short EMA weights", func(r *trainstate.Replica) { r.EMAParams = r.EMAParams[1:] }},
		{"no EMA buffers", func(r *trainstate.Replica) { r.EMABuffers = nil }},
		{"long EMA buffers", func(r *trainstate.Replica) { r.EMABuffers = append(r.EMABuffers, 1) }},
	} {
		r := good
		c.breaks(&r)
		if err := w.Load(r); err == nil {
			t.Errorf("%s: loaded", c.what)
		}
	}
	if err := w.Load(good); err != nil {
		t.Fatal(err)
	}
}
