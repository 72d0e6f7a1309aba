package serve

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/demo"
	"github.com/tinct/tinct/trainstate"
)

// TestDamagedCheckpoint: a damaged newest checkpoint (its parts do not
// match its manifest, or match but hold no network) is reported by name in
// /api/checkpoints and skipped: the default is the newest valid one, and
// requests that name none colorize with it. A request that names the
// damaged one gets an error naming it and another to choose, not
// "internal error".
func TestDamagedCheckpoint(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string, store checkpoint.Store)
		reason string // in the damage reported
	}{
		{"part overwritten", func(t *testing.T, dir string, _ checkpoint.Store) {
			if err := os.WriteFile(filepath.Join(dir, "epoch-000002", "ema.safetensors"), []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "part ema.safetensors"},
		{"no network in it", func(t *testing.T, _ string, store checkpoint.Store) {
			// a finished save whose network part is not a network
			err := store.Save(ctx, &checkpoint.Checkpoint{Name: "epoch-000002", Step: 20, Epoch: 2,
				Parts: map[string][]byte{"ema.safetensors": []byte("not safetensors"), "config.yaml": []byte("image_size: 16\n")}})
			if err != nil {
				t.Fatal(err)
			}
		}, "no network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, store := tinyStore(t)
			saveTiny(t, store, "epoch-000002", 20, 2)
			tc.damage(t, dir, store)
			_, ts := newTestServer(t, Options{Store: dir})

			var got struct {
				Default     string
				Checkpoints []checkpointInfo
			}
			getJSON(t, ts.URL+"/api/checkpoints", 200, &got)
			if got.Default != "epoch-000001" || len(got.Checkpoints) != 2 || !strings.Contains(got.Checkpoints[0].Damaged, tc.reason) || got.Checkpoints[1].Damaged != "" {
				t.Errorf("checkpoints: %+v, want epoch-000002 damaged (%s) and epoch-000001 the default", got, tc.reason)
			}

			// by default: the newest valid checkpoint
			body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
			st := readStream(t, post(t, ctx, ts.URL+"/api/colorize", body, ct))
			if st.start == nil || st.start.Checkpoint != "epoch-000001" || st.done == nil {
				t.Errorf("colorize by default: start %+v, done %v, want epoch-000001", st.start, st.done != nil)
			}

			// by name: an error that names it and suggests another
			for _, path := range []string{"/api/colorize", "/api/gray"} {
				body, ct = form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1", "checkpoint", "epoch-000002")
				res := post(t, ctx, ts.URL+path, body, ct)
				msg := apiErr(t, res)
				if res.StatusCode < 400 || strings.Contains(msg, "internal error") || !strings.Contains(msg, "epoch-000002 is damaged") ||
					!strings.Contains(msg, "choose another, e.g. epoch-000001") || strings.Contains(msg, dir) {
					t.Errorf("%s naming the damaged checkpoint: %d %q", path, res.StatusCode, msg)
				}
			}
		})
	}

	t.Run("all damaged", func(t *testing.T) {
		dir, _ := tinyStore(t)
		os.WriteFile(filepath.Join(dir, "epoch-000001", "config.yaml"), []byte("x"), 0o644)
		_, ts := newTestServer(t, Options{Store: dir})
		body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
		res := post(t, ctx, ts.URL+"/api/colorize", body, ct)
		if msg := apiErr(t, res); res.StatusCode != http.StatusInternalServerError || !strings.Contains(msg, "no usable checkpoint in checkpoints: epoch-000001 (part config.yaml") {
			t.Errorf("every checkpoint damaged: %d %q", res.StatusCode, msg)
		}
		// with a fallback model (tinct serve's demo): that one
		fb := &trainstate.Network{Name: "demo", ImageSize: tinySize}
		fb.Net = loadTiny(t).Net
		_, ts = newTestServer(t, Options{Store: dir, Fallback: fb})
		var got struct {
			Default     string
			Checkpoints []checkpointInfo
		}
		getJSON(t, ts.URL+"/api/checkpoints", 200, &got)
		if got.Default != "demo" || len(got.Checkpoints) != 2 || got.Checkpoints[0].Damaged == "" {
			t.Errorf("every checkpoint damaged, with a fallback: %+v", got)
		}
	})
}

// loadTiny returns the model of a fresh tiny checkpoint.
func loadTiny(t *testing.T) *trainstate.Network {
	t.Helper()
	_, store := tinyStore(t)
	m, _, err := trainstate.LoadNetwork(context.Background(), store, "epoch-000001", trainstate.PartEMA)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDemoModel: the bundled demo model, as tinct serve offers it, has
// its model card's date: /api/checkpoints does not say year 1.
func TestDemoModel(t *testing.T) {
	fb, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	_, ts := newTestServer(t, Options{Store: t.TempDir(), Fallback: fb})
	var got struct {
		Default     string
		Checkpoints []checkpointInfo
	}
	getJSON(t, ts.URL+"/api/checkpoints", 200, &got)
	if got.Default != "demo" || len(got.Checkpoints) != 1 || !got.Checkpoints[0].Bundled ||
		got.Checkpoints[0].Time.Format(time.DateOnly) != "2026-12-03" || got.Checkpoints[0].Step != 9042 {
		t.Errorf("checkpoints with the demo model: %+v, want it dated 2026-12-03 (demo/MODEL.md)", got)
	}
}
