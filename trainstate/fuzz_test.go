package trainstate

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/internal/fuzzcheck"
)

// tinyState is the state of the smallest network there is, at pos.
func tinyState(t testing.TB, pos control.Position) *State {
	t.Helper()
	cfg, err := config.Parse(nil, []string{"model.widths=[1,2]", "model.block_depth=1", "image_size=2"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Pos = pos
	return s
}

// tinyCheckpoint is tinyState(pos) encoded.
func tinyCheckpoint(t testing.TB, pos control.Position) *checkpoint.Checkpoint {
	t.Helper()
	ck, err := tinyState(t, pos).Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	mid := control.Position{Epoch: 2, StepInEpoch: 3, Step: 23, EpochLossSum: 0.75, EpochCount: 96}
	state := tinyCheckpoint(t, mid).Parts[PartPosition]
	fuzzcheck.WriteSeed(t, "FuzzRestore", "saved", state, mid.Step, mid.Epoch)
	fuzzcheck.WriteSeed(t, "FuzzRestore", "saved-fresh", tinyCheckpoint(t, control.Position{}).Parts[PartPosition], int64(0), 0)
	fuzzcheck.WriteSeed(t, "FuzzRestore", "truncated", state[:len(state)/2], mid.Step, mid.Epoch)
	fuzzcheck.WriteSeed(t, "FuzzRestore", "other-step-than-manifest", state, mid.Step+1, mid.Epoch)
	fuzzcheck.WriteSeed(t, "FuzzRestore", "negative", []byte(`{"epoch":-1,"step_in_epoch":-5,"step":-1,"epoch_count":-3,"seed":42}`), int64(-1), -1)
	fuzzcheck.WriteSeed(t, "FuzzRestore", "wrong-type", []byte(`{"step":"23"}`), int64(23), 0)
}

// FuzzRestore restores a checkpoint of a tiny network whose state.json
// holds the fuzzer's bytes and whose manifest header says step and epoch.
// Restore must refuse a position that no run can have reached — a negative
// counter or loss sum, more steps in the epoch than in all, or a step or
// epoch other than the header's — and leave the state's position alone when
// it fails. A position it accepts must be the file's, and must survive
// Checkpoint → Restore unchanged.
func FuzzRestore(f *testing.F) {
	f.Add([]byte(`{"epoch":1,"step_in_epoch":0,"step":10,"epoch_loss_sum":0,"epoch_count":0,"seed":42}`), int64(10), 1)
	f.Add([]byte(`{}`), int64(0), 0)
	f.Add([]byte(`null`), int64(0), 0)
	f.Add([]byte(`{"step":9223372036854775807,"step_in_epoch":1}`), int64(9223372036854775807), 0)
	base := tinyCheckpoint(f, control.Position{})
	st := tinyState(f, control.Position{})
	other := tinyState(f, control.Position{})
	f.Fuzz(func(t *testing.T, state []byte, step int64, epoch int) {
		ck := *base
		ck.Step, ck.Epoch = step, epoch
		ck.Parts = map[string][]byte{}
		for k, v := range base.Parts {
			ck.Parts[k] = v
		}
		ck.Parts[PartPosition] = state

		marker := control.Position{Epoch: 7, StepInEpoch: 7, Step: 7}
		st.Pos = marker
		if err := st.Restore(&ck, nil); err != nil {
			if st.Pos != marker {
				t.Fatalf("a failed Restore changed the position to %+v: %v", st.Pos, err)
			}
			return
		}
		p := st.Pos
		if p.Step < 0 || p.Epoch < 0 || p.StepInEpoch < 0 || p.EpochCount < 0 || p.EpochLossSum < 0 || int64(p.StepInEpoch) > p.Step {
			t.Fatalf("accepted position %+v", p)
		}
		if p.Step != step || p.Epoch != epoch {
			t.Fatalf("accepted position %+v in a checkpoint of step %d, epoch %d", p, step, epoch)
		}
		var want position
		if err := json.Unmarshal(state, &want); err != nil || want.Position != p {
			t.Fatalf("restored %+v from %q (%v)", p, state, err)
		}

		ck2, err := st.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if ck2.Step != p.Step || ck2.Epoch != p.Epoch {
			t.Fatalf("checkpoint header %d/%d for position %+v", ck2.Step, ck2.Epoch, p)
		}
		other.Pos = control.Position{}
		if err := other.Restore(ck2, nil); err != nil {
			t.Fatalf("Checkpoint → Restore: %v", err)
		}
		if !reflect.DeepEqual(other.Pos, p) {
			t.Fatalf("Checkpoint → Restore gave %+v, want %+v", other.Pos, p)
		}
	})
}
