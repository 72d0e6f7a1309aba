package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	// the original's defaults
	if c.Optimizer != "adam" || c.LR != 2e-4 || c.BatchSize != 32 || c.Epochs != 1000 || c.ImageSize != 128 ||
		c.EMA.Decay != 0.999 || c.EMA.Buffers != "copy" || c.CheckpointEvery != 50 || c.SampleEvery != 10 || c.SampleSteps != 100 || c.Resume {
		t.Fatalf("defaults differ from the original's: %+v", c)
	}
	if !reflect.DeepEqual(c.Model.Widths, []int{32, 64, 96, 128}) || c.Model.BlockDepth != 2 {
		t.Fatalf("model %+v", c.Model)
	}
}

func TestOverrides(t *testing.T) {
	c, err := Load("", []string{"lr=0.0001", "batch_size=64", "ema.decay=0.9995", "ema.buffers=average", "model.widths=[16,32]", "resume=true", "dataset=some/dir", "lr=1e-3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.LR != 1e-3 || c.BatchSize != 64 || c.EMA.Decay != 0.9995 || c.EMA.Buffers != "average" || !c.Resume || c.Dataset != "some/dir" || !reflect.DeepEqual(c.Model.Widths, []int{16, 32}) {
		t.Fatalf("overrides not applied: %+v", c)
	}
}

func TestBadOverrides(t *testing.T) {
	for _, tc := range []struct{ override, want string }{
		{"lrr=1", `unknown key "lrr" (valid keys: batch_size,`},
		{"ema.decy=0.9", `unknown key "ema.decy" (valid keys: ema.buffers, ema.decay)`},
		{"lr=abc", "lr=abc: want a number"},
		{"batch_size=3.5", "batch_size=3.5: want an integer"},
		{"batch_size=0", "batch_size=0: must be at least 1"},
		{"ema.buffers=mean", "ema.buffers=mean: must be one of copy, average"},
		{"optimizer=sgd", "optimizer=sgd: must be one of adam"},
		{"gemm=cuda", "gemm=cuda: must be one of auto, onednn, openblas, go"},
		{"resume=maybe", "resume=maybe: want true or false"},
		{"model.widths=[32,x]", "every element must be like 32"},
		{"model.widths=7", "want a list"},
		{"ema=1", "ema is a group; set one of ema.buffers, ema.decay"},
		{"image_size=100", "image_size=100: must be a positive multiple of 8"},
		{"ema.decay=1", "ema.decay=1: must be in [0, 1)"},
		{"novalue", "want key=value"},
		{"lr.x=1", "lr is not a group of keys"},
	} {
		t.Run(tc.override, func(t *testing.T) {
			_, err := Load("", []string{tc.override})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestFileAndRoundTrip(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "c.yaml")
	os.WriteFile(f, []byte("image_size: 64\nema:\n  decay: 0.99\n"), 0o644)
	c, err := Load(f, []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ImageSize != 64 || c.EMA.Decay != 0.99 || c.EMA.Buffers != "copy" || c.Epochs != 3 || c.BatchSize != 32 {
		t.Fatalf("file merge: %+v", c)
	}
	// the resolved config reloads to the same values
	r := filepath.Join(dir, "resolved.yaml")
	os.WriteFile(r, c.YAML(), 0o644)
	c2, err := Load(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip: %+v vs %+v", c, c2)
	}
	os.WriteFile(f, []byte("image_sise: 64\n"), 0o644)
	if _, err := Load(f, nil); err == nil || !strings.Contains(err.Error(), `unknown key "image_sise"`) {
		t.Fatalf("unknown key in file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestShippedConfigsLoad(t *testing.T) {
	for _, f := range []string{"../configs/config.yaml", "../configs/sample.yaml"} {
		if _, err := Load(f, nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
