package coordinator_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/coordinator"
)

// TestSaveRefusesAnotherRunsStore: two runs started on one empty store
// (two coordinators given the same store=). The one that saves second
// finds the other's checkpoints there before it saves, and stops with an
// error naming both runs and the store, leaving the other's checkpoints
// as they were — also when its only save is the last one (checkpoint_every=0),
// which used to fail without failing the run. A checkpoint without a run
// (an older tinct's) is no other run's.
func TestSaveRefusesAnotherRunsStore(t *testing.T) {
	for _, every := range []string{"checkpoint_every=1", "checkpoint_every=0"} {
		t.Run(every, func(t *testing.T) {
			dir := t.TempDir()
			a := startLocal(t, testConfig(t, dir), coordinator.Options{}, false, 1)
			b := startLocal(t, testConfig(t, dir, every), coordinator.Options{}, false, 1)
			if a.st.Run == b.st.Run || a.st.Run == "" {
				t.Fatalf("runs %q and %q", a.st.Run, b.st.Run)
			}
			if err := a.co.Run(context.Background()); err != nil {
				t.Fatalf("run %s: %v", a.st.Run, err)
			}
			store, _ := checkpoint.Open(dir)
			before, _ := store.List(context.Background())
			err := b.co.Run(context.Background())
			if err == nil {
				t.Fatalf("run %s returned no error on run %s's store", b.st.Run, a.st.Run)
			}
			for _, want := range []string{a.st.Run, b.st.Run, store.String()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %v\nwant it to name %s", err, want)
				}
			}
			after, _ := store.List(context.Background())
			if len(after) != len(before) {
				t.Fatalf("checkpoints %+v after the refused run, want %+v", after, before)
			}
			for i, in := range after {
				if in.Run != a.st.Run || in.Name != before[i].Name || !in.Time.Equal(before[i].Time) {
					t.Errorf("checkpoint %+v, want run %s's %+v", in, a.st.Run, before[i])
				}
			}
		})
	}

	t.Run("older tinct's checkpoint", func(t *testing.T) {
		dir := t.TempDir()
		l := startLocal(t, testConfig(t, dir), coordinator.Options{}, false, 1)
		old, err := l.st.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		old.Name, old.Run = "from-an-older-tinct", ""
		store, _ := checkpoint.Open(dir)
		if err := store.Save(context.Background(), old); err != nil {
			t.Fatal(err)
		}
		if err := l.co.Run(context.Background()); err != nil {
			t.Fatalf("run beside a run-less checkpoint: %v", err)
		}
		if list, _ := store.List(context.Background()); len(list) != 4 || list[0].Run != l.st.Run {
			t.Fatalf("checkpoints %+v", list)
		}
	})
}
