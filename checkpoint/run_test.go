package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// ckOf is ck(name, step) saved by run.
func ckOf(run, name string, step int64) *Checkpoint {
	c := ck(name, step)
	c.Run = run
	return c
}

// desc names a checkpoint and its run, for failure messages.
func desc(c *Checkpoint) string {
	if c == nil {
		return "no checkpoint"
	}
	return c.Name + " of run " + RunLabel(c.Run)
}

// TestRunRecorded: a checkpoint's run is stored in its manifest as "run"
// and comes back from Load and List; a checkpoint without one (as an
// older tinct saved them) has no "run" in its manifest and loads with "".
func TestRunRecorded(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		ctx := context.Background()
		d := newStore(t)
		save(t, d, ckOf("0123456789abcdef", "step-000000002", 2), ck("step-000000001", 1))
		var m map[string]any
		if err := json.Unmarshal(d.readRaw(t, "step-000000002/manifest.json"), &m); err != nil {
			t.Fatal(err)
		}
		if m["run"] != "0123456789abcdef" {
			t.Errorf("manifest run = %v, want 0123456789abcdef", m["run"])
		}
		if raw := string(d.readRaw(t, "step-000000001/manifest.json")); strings.Contains(raw, `"run"`) {
			t.Errorf("a checkpoint without a run has a run in its manifest:\n%s", raw)
		}
		got, err := d.Load(ctx, "step-000000002")
		if err != nil || got.Run != "0123456789abcdef" {
			t.Fatalf("Load: run %q, %v", got.Run, err)
		}
		old, err := d.Load(ctx, "step-000000001")
		if err != nil || old.Run != "" {
			t.Fatalf("Load of a checkpoint without a run: run %q, %v", old.Run, err)
		}
		infos, err := d.List(ctx)
		if err != nil || len(infos) != 2 || infos[0].Run != "0123456789abcdef" || infos[1].Run != "" {
			t.Fatalf("List = %+v, %v", infos, err)
		}
	})
}

// TestLatestStaysInRun: Latest resumes the run of the newest listed
// checkpoint. Falling back past its damaged checkpoints it skips other
// runs' and says so; when that run has no valid checkpoint it fails
// (naming the runs) instead of resuming another run. The latest pointer
// at another run's checkpoint (saved last) changes nothing.
func TestLatestStaysInRun(t *testing.T) {
	const (
		a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
		s63  = "step-000000063"
		s42  = "step-000000042"
		s21  = "step-000000021"
	)
	damage := func(t *testing.T, d fixture, name string) {
		p := name + "/weights.safetensors"
		data := d.readRaw(t, p)
		data[len(data)/2] ^= 0x10
		d.writeRaw(t, p, data)
	}
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		ctx := context.Background()

		t.Run("newest damaged, only another run's valid", func(t *testing.T) {
			d := newStore(t)
			save(t, d, ckOf(a, s63, 63), ckOf(b, s21, 21)) // latest → B's step 21
			damage(t, d, s63)
			got, warnings, err := d.Latest(ctx)
			if got != nil {
				t.Fatalf("Latest returned %s; want no checkpoint: run %s's newest is damaged and %s is another run's", desc(got), a, s21)
			}
			var nv *NoValidError
			if !errors.As(err, &nv) || !errors.Is(err, ErrNotFound) || errors.Is(err, ErrEmpty) {
				t.Fatalf("Latest: %v; want a *NoValidError", err)
			}
			for _, want := range []string{d.String(), "run " + a, s63, "sha256 mismatch", s21, "of run " + b, "other runs skipped"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Latest: %v\nwant it to contain %q", err, want)
				}
			}
			var other *OtherRunError
			if len(warnings) != 2 || !errors.As(warnings[1], &other) || other.Name != s21 || other.Run != b || other.NewestRun != a {
				t.Errorf("warnings = %q, want the damaged %s and an *OtherRunError for %s", warnings, s63, s21)
			}
		})

		t.Run("fallback skips another run's", func(t *testing.T) {
			d := newStore(t)
			save(t, d, ckOf(a, s21, 21), ckOf(a, s63, 63), ckOf(b, s42, 42))
			damage(t, d, s63)
			got, warnings, err := d.Latest(ctx)
			if err != nil || got.Name != s21 || got.Run != a {
				t.Fatalf("Latest = %s, %v; want run %s's %s", desc(got), err, a, s21)
			}
			if len(warnings) != 2 || !errors.Is(warnings[0], ErrCorrupt) || !strings.Contains(warnings[1].Error(), s42+": of run "+b+", not run "+a) {
				t.Errorf("warnings = %q, want the damaged %s, then %s skipped as run %s's", warnings, s63, s42, b)
			}
		})

		t.Run("newest valid", func(t *testing.T) {
			d := newStore(t)
			save(t, d, ckOf(a, s63, 63), ckOf(b, s21, 21))
			got, warnings, err := d.Latest(ctx)
			if err != nil || got.Name != s63 || got.Run != a || len(warnings) != 0 {
				t.Fatalf("Latest = %s, %q, %v; want run %s's %s and no warnings", desc(got), warnings, err, a, s63)
			}
		})

		t.Run("older tinct's newest damaged", func(t *testing.T) {
			d := newStore(t)
			save(t, d, ckOf(a, s21, 21), ckOf("", s63, 63))
			damage(t, d, s63)
			got, _, err := d.Latest(ctx)
			if got != nil || err == nil || !strings.Contains(err.Error(), "none: saved by an older tinct") {
				t.Fatalf("Latest = %s, %v; want an error naming the run-less checkpoint's run", desc(got), err)
			}
		})
	})
}
