package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tinct/tinct/model"
)

func TestDefaults(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	// the original's defaults
	if c.Optimizer != "adam" || c.LR != 2e-4 || c.BatchSize != 32 || c.Epochs != 1000 || c.ImageSize != 128 ||
		c.EMA.Decay != 0.999 || c.EMA.Buffers != "copy" || c.CheckpointEvery != 50 || c.SampleEvery != 10 || c.SampleSteps != 100 || c.Resume != ResumeNo {
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
	if c.LR != 1e-3 || c.BatchSize != 64 || c.EMA.Decay != 0.9995 || c.EMA.Buffers != "average" || c.Resume != ResumeYes || c.Dataset != "some/dir" || !reflect.DeepEqual(c.Model.Widths, []int{16, 32}) {
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
		{"device=gpu0", "device=gpu0: must be cpu or cuda:N"},
		{"device=cuda", "device=cuda: must be cpu or cuda:N"},
		{"resume=maybe", "resume=maybe: must be one of false, true, auto"},
		{"resume=1", "resume=1: must be one of false, true, auto"},
		{"resume=[true]", ": want a single value"},
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

func TestParse(t *testing.T) {
	c, err := Load("", []string{"image_size=64", "model.widths=[16,32,48]", "ema.buffers=average", "dataset=some/dir"})
	if err != nil {
		t.Fatal(err)
	}
	// the resolved YAML parses back to the same config
	c2, err := Parse(c.YAML(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip: %+v vs %+v", c, c2)
	}
	// Parse and Load of the same bytes agree
	f := filepath.Join(t.TempDir(), "c.yaml")
	data := []byte("image_size: 64\nema:\n  decay: 0.99\n")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fromFile, err := Load(f, []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	fromBytes, err := Parse(data, []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromFile, fromBytes) {
		t.Fatalf("Load %+v, Parse %+v", fromFile, fromBytes)
	}
	// no bytes: the defaults
	def, err := Parse(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := Load("", nil); !reflect.DeepEqual(def, want) {
		t.Fatalf("Parse(nil) %+v, defaults %+v", def, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		data      string
		overrides []string
		want      string
	}{
		{"unknown key", "image_sise: 64\n", nil, `unknown key "image_sise"`},
		{"unknown nested key", "ema:\n  decy: 0.9\n", nil, `unknown key "ema.decy"`},
		{"bad value", "lr: abc\n", nil, "lr=abc: want a number"},
		{"group as value", "ema: 1\n", nil, "ema must be a mapping"},
		{"invalid value", "batch_size: 0\n", nil, "batch_size=0: must be at least 1"},
		{"bad override", "epochs: 3\n", []string{"lrr=1"}, `unknown key "lrr"`},
		{"bad override value", "", []string{"resume=maybe"}, "resume=maybe: must be one of false, true, auto"},
		{"bad resume in a file", "resume: sometimes\n", nil, "resume=sometimes: must be one of false, true, auto"},
		{"not yaml", "lr: [\n", nil, "config: yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data), tc.overrides)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestModelConfig(t *testing.T) {
	c, err := Load("", []string{"model.widths=[4,8,16]", "model.block_depth=3", "image_size=16"})
	if err != nil {
		t.Fatal(err)
	}
	m := c.ModelConfig()
	if !reflect.DeepEqual(m.Widths, []int{4, 8, 16}) || m.BlockDepth != 3 || m.EmbedDims != model.DefaultConfig().EmbedDims {
		t.Fatalf("model config %+v", m)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	// the model's widths are its own copy
	m.Widths[0] = 99
	if c.Model.Widths[0] != 4 {
		t.Fatal("ModelConfig shares the config's widths slice")
	}
}

// TestResume: resume is false, true or auto; YAML booleans still work, in
// files (older configs and checkpoints' config.yaml) and on the command line.
func TestResume(t *testing.T) {
	for _, tc := range []struct {
		data     string
		override string
		want     string
	}{
		{"", "", ResumeNo},
		{"resume: true\n", "", ResumeYes},
		{"resume: false\n", "", ResumeNo},
		{"resume: True\n", "", ResumeYes},
		{"resume: auto\n", "", ResumeAuto},
		{`resume: "true"` + "\n", "", ResumeYes},
		{"", "resume=true", ResumeYes},
		{"", "resume=auto", ResumeAuto},
		{"resume: true\n", "resume=false", ResumeNo},
		{"resume: auto\n", "resume=true", ResumeYes},
	} {
		var overrides []string
		if tc.override != "" {
			overrides = []string{tc.override}
		}
		c, err := Parse([]byte(tc.data), overrides)
		if err != nil {
			t.Fatalf("%q %v: %v", tc.data, overrides, err)
		}
		if c.Resume != tc.want {
			t.Errorf("%q %v: resume = %q, want %q", tc.data, overrides, c.Resume, tc.want)
		}
		// the resolved file reads back the same
		back, err := Parse(c.YAML(), nil)
		if err != nil || back.Resume != c.Resume {
			t.Errorf("%q %v: round trip gives %v, %v", tc.data, overrides, back, err)
		}
	}
}

func TestCUDAOrdinal(t *testing.T) {
	for dev, want := range map[string]int{"cpu": -1, "cuda:0": 0, "cuda:12": 12, "cuda:": -1, "gpu:1": -1} {
		c := Config{Device: dev}
		if n, ok := c.CUDAOrdinal(); !ok && want >= 0 || ok && n != want {
			t.Errorf("device=%s: CUDAOrdinal() = %d, %v", dev, n, ok)
		}
	}
}
