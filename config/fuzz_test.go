package config

import (
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tinct/tinct/configs"
	"github.com/tinct/tinct/internal/fuzzcheck"
)

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	c, err := Parse(nil, []string{"model.widths=[4,8]", "image_size=16", "lr=1e-3", "dataset=s3://bucket/data set"})
	if err != nil {
		t.Fatal(err)
	}
	resolved := c.YAML()
	for name, seed := range map[string]struct {
		file      []byte
		overrides string
	}{
		"defaults-file":      {configs.Default, ""},
		"resolved":           {resolved, ""},
		"resolved-truncated": {resolved[:len(resolved)/2], ""},
		"overrides":          {nil, "lr=0.0001\nema.decay=0.9995\nmodel.widths=[16,32]\nresume=true"},
		"file-and-overrides": {[]byte("batch_size: 8\nema:\n  buffers: average\n"), "ema.decay=0\nthreads=2"},
		"unknown-key":        {[]byte("ema:\n  decy: 0.9\n"), ""},
		"group-as-value":     {nil, "ema=1"},
		"not-a-mapping":      {[]byte("- a\n- b\n"), ""},
		"aliases":            {[]byte("ema: &e {decay: 0.5}\nmodel: *e\n"), ""},
		// 1 << 64 is 0 in Go: a 65-level widths list made image_size's
		// check divide by zero.
		"65-levels": {nil, "model.widths=[" + strings.Repeat("1,", 64) + "1]"},
		// 1 << 63 is negative: any image_size passed "≥ 2^63", and 0 is a
		// multiple of it.
		"64-levels-size-0": {nil, "model.widths=[" + strings.Repeat("1,", 63) + "1]\nimage_size=0"},
		"nan-lr":           {[]byte("lr: .nan\n"), ""},
		"inf-lr":           {nil, "lr=.inf"},
		"nan-decay":        {nil, "ema.decay=.nan"},
	} {
		fuzzcheck.WriteSeed(t, "FuzzParse", name, seed.file, seed.overrides)
	}
}

// leaves flattens a YAML mapping into dotted key → value.
func leaves(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			leaves(prefix+k+".", sub, out)
			continue
		}
		out[prefix+k] = v
	}
}

// FuzzParse resolves a configuration from the fuzzer's file and overrides
// (one key=value a line). It must return an error, never panic, or a
// configuration that passes Validate with finite, in-range numbers; and
// that configuration must come back unchanged both through its YAML
// (Parse(c.YAML())) and through one key=value override per key, each value
// written as YAML, with no file at all (what tinct train key=value does).
func FuzzParse(f *testing.F) {
	f.Add([]byte(nil), "")
	f.Add([]byte("lr: 3e-4\nmodel:\n  widths: [8, 16, 32]\n  block_depth: 1\n"), "image_size=32")
	f.Add([]byte("seed: 7\ndataset: 12\n"), "store=file:///tmp/x")
	f.Add([]byte(nil), "novalue")
	f.Add([]byte("{"), "")
	f.Fuzz(func(t *testing.T, file []byte, overrides string) {
		var over []string
		if overrides != "" {
			over = strings.Split(overrides, "\n")
		}
		c, err := Parse(file, over)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse returned a configuration that does not validate: %v", err)
		}
		if levels := len(c.Model.Widths); c.ImageSize < 1 || levels > 63 || c.ImageSize%(1<<(levels-1)) != 0 {
			t.Fatalf("accepted image_size %d for %d levels", c.ImageSize, levels)
		}
		for _, x := range []float64{c.LR, c.EMA.Decay} {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("accepted lr %v, ema.decay %v", c.LR, c.EMA.Decay)
			}
		}

		y := c.YAML()
		c2, err := Parse(y, nil)
		if err != nil {
			t.Fatalf("a resolved configuration's YAML does not parse: %v\n%s", err, y)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("YAML → Parse changed the configuration:\n%+v\n%+v", c, c2)
		}

		var tree map[string]any
		if err := yaml.Unmarshal(y, &tree); err != nil {
			t.Fatal(err)
		}
		flat := map[string]any{}
		leaves("", tree, flat)
		var kv []string
		for k, v := range flat {
			b, err := yaml.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			kv = append(kv, k+"="+strings.TrimSuffix(string(b), "\n"))
		}
		sort.Strings(kv)
		c3, err := Parse(nil, kv)
		if err != nil {
			t.Fatalf("the configuration as overrides does not parse: %v\n%q", err, kv)
		}
		if !reflect.DeepEqual(c, c3) {
			t.Fatalf("the configuration as overrides differs:\n%+v\n%+v\n%q", c, c3, kv)
		}
	})
}
