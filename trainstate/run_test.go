package trainstate

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"

	"github.com/tinct/tinct/control"
)

// TestRunID: a new state is a new run (16 hex digits from crypto/rand),
// its checkpoints carry the id, and a restored state takes the
// checkpoint's. The id is no part of the training state: two runs of one
// seed have the same checksum and the same parts, byte for byte.
func TestRunID(t *testing.T) {
	pos := control.Position{Epoch: 1, StepInEpoch: 0, Step: 4}
	a, b := tinyState(t, pos), tinyState(t, pos)
	for _, s := range []*State{a, b} {
		if raw, err := hex.DecodeString(s.Run); err != nil || len(raw) != 8 {
			t.Fatalf("run id %q, want 16 hex digits", s.Run)
		}
	}
	if a.Run == b.Run {
		t.Fatalf("two new states share run id %s", a.Run)
	}
	if !bytes.Equal(a.Checksum(), b.Checksum()) {
		t.Fatal("the run id changes the state's checksum")
	}
	ca, err := a.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if ca.Run != a.Run || cb.Run != b.Run {
		t.Fatalf("checkpoint runs %q and %q, want the states' %q and %q", ca.Run, cb.Run, a.Run, b.Run)
	}
	for name, part := range ca.Parts {
		if !bytes.Equal(part, cb.Parts[name]) {
			t.Errorf("part %s differs between two runs of one seed", name)
		}
	}

	resumed := tinyState(t, control.Position{})
	if err := resumed.Restore(ca, nil); err != nil {
		t.Fatal(err)
	}
	if resumed.Run != a.Run {
		t.Fatalf("restored run %q, want the checkpoint's %q", resumed.Run, a.Run)
	}
	if !bytes.Equal(resumed.Checksum(), a.Checksum()) {
		t.Fatal("restored checksum differs")
	}

	// a checkpoint saved by an older tinct has no run: the resumed run
	// gets a fresh id, and says so once
	old := *ca
	old.Run = ""
	var logs strings.Builder
	older := tinyState(t, control.Position{})
	fresh := older.Run
	if err := older.Restore(&old, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if older.Run == "" || older.Run == a.Run || older.Run != fresh {
		t.Fatalf("run after restoring a run-less checkpoint: %q (fresh %q, other %q)", older.Run, fresh, a.Run)
	}
	if n := strings.Count(logs.String(), "no run id"); n != 1 || !strings.Contains(logs.String(), "run="+older.Run) {
		t.Fatalf("log of restoring a run-less checkpoint (want one line naming the new id):\n%s", logs.String())
	}
	if ck, err := older.Checkpoint(); err != nil || ck.Run != older.Run {
		t.Fatalf("its next checkpoint's run %q, %v", ck.Run, err)
	}
}
