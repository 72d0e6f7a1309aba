// Package config is tinct's typed training configuration: the defaults in
// configs/config.yaml, an optional file over them, and key=value overrides
// from the command line (dotted for nested keys), validated with errors that
// name the key and its valid values.
package config

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tinct/tinct/configs"
	"github.com/tinct/tinct/internal/modelspec"
)

// EMA configures the exponential moving average of the weights.
type EMA struct {
	Decay   float64 `yaml:"decay"`
	Buffers string  `yaml:"buffers"` // copy | average
}

// Model is the U-Net's shape.
type Model struct {
	Widths     []int `yaml:"widths"`
	BlockDepth int   `yaml:"block_depth"`
}

// sample_color values: how the sample grids show a colourisation.
const (
	SampleLuminance = "luminance" // the sample's colour on the gray input's own luminance (as colorize and the web app)
	SampleRaw       = "raw"       // the network's RGB as sampled
)

// Config holds every hyperparameter of a run; see configs/config.yaml.
type Config struct {
	Seed       uint64 `yaml:"seed"`
	Dataset    string `yaml:"dataset"`
	ImageSize  int    `yaml:"image_size"`
	ValImages  int    `yaml:"val_images"`
	TestImages int    `yaml:"test_images"`
	Flip       bool   `yaml:"flip"`
	Crops      int    `yaml:"crops"`

	BatchSize int     `yaml:"batch_size"`
	Epochs    int     `yaml:"epochs"`
	Optimizer string  `yaml:"optimizer"`
	LR        float64 `yaml:"lr"`
	EMA       EMA     `yaml:"ema"`
	Model     Model   `yaml:"model"`

	SampleEvery     int    `yaml:"sample_every"`
	SampleImages    int    `yaml:"sample_images"`
	SampleSteps     int    `yaml:"sample_steps"`
	SampleColor     string `yaml:"sample_color"` // SampleLuminance or SampleRaw
	SampleClip      bool   `yaml:"sample_clip"`
	CheckpointEvery int    `yaml:"checkpoint_every"`
	SnapshotEvery   int    `yaml:"snapshot_every"`  // steps between the coordinator's copies of a replica's state
	StepsInFlight   int    `yaml:"steps_in_flight"` // steps sent beyond the last one every replica agreed on
	Store           string `yaml:"store"`
	KeepLast        int    `yaml:"keep_last"`
	Resume          string `yaml:"resume"` // ResumeNo, ResumeYes or ResumeAuto
	// OverwriteStore lets resume=false start a new run in a store that
	// holds checkpoints: they are deleted first, so that the store holds
	// only the new run. Without it such a run stops with an error.
	OverwriteStore bool `yaml:"overwrite_store"`

	OutputDir   string `yaml:"output_dir"`
	MetricsAddr string `yaml:"metrics_addr"`
	GEMM        string `yaml:"gemm"`
	Threads     int    `yaml:"threads"`
	Device      string `yaml:"device"`    // cpu, or cuda:N: where `tinct train` computes (workers: --gpu N)
	Precision   string `yaml:"precision"` // a GPU's matrix products: tf32, fp32 or bf16 (fp32 storage throughout)
}

// Values of resume.
const (
	ResumeNo   = "false" // start from the seed's state
	ResumeYes  = "true"  // continue from the newest valid checkpoint; none is an error
	ResumeAuto = "auto"  // continue if the store holds a valid checkpoint, start afresh if it is empty
)

var deviceRE = regexp.MustCompile(`^(cpu|cuda:([0-9]+))$`)

// CUDAOrdinal is the GPU index of device=cuda:N; false for cpu (and for
// anything Validate refuses).
func (c *Config) CUDAOrdinal() (int, bool) {
	m := deviceRE.FindStringSubmatch(c.Device)
	if m == nil || m[2] == "" {
		return 0, false
	}
	n, err := strconv.Atoi(m[2])
	return n, err == nil
}

// Choices lists the valid values of the keys that take one of a set.
var Choices = map[string][]string{
	"optimizer":   {"adam"},
	"ema.buffers": {"copy", "average"},
	"gemm":        {"auto", "onednn", "openblas", "go"},
	"resume":      {ResumeNo, ResumeYes, ResumeAuto},
	"precision":   {"tf32", "fp32", "bf16"},
}

// Load resolves the configuration: built-in defaults, then file (if not
// empty; keys it omits keep their defaults), then overrides of the form
// key=value. It is Parse of the file's bytes.
func Load(file string, overrides []string) (*Config, error) {
	if file == "" {
		return resolve(nil, "", overrides)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return resolve(data, file, overrides)
}

// Parse resolves the configuration from the YAML bytes of a config file
// (keys it omits keep their built-in defaults), then overrides of the form
// key=value, then validation: Load without the file system.
func Parse(data []byte, overrides []string) (*Config, error) {
	return resolve(data, "config", overrides)
}

// resolve is Load and Parse: defaults, data (nil for none; errors name it
// origin), overrides, validation.
func resolve(data []byte, origin string, overrides []string) (*Config, error) {
	tree, err := parse(configs.Default, "built-in defaults")
	if err != nil {
		return nil, err
	}
	if data != nil {
		over, err := parse(data, origin)
		if err != nil {
			return nil, err
		}
		if err := merge(tree, over, "", origin); err != nil {
			return nil, err
		}
	}
	for _, o := range overrides {
		if err := apply(tree, o); err != nil {
			return nil, err
		}
	}
	out, err := yaml.Marshal(tree)
	if err != nil {
		return nil, err
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &c, c.Validate()
}

func parse(data []byte, origin string) (map[string]any, error) {
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", origin, err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// merge copies over into tree, refusing keys tree does not have.
func merge(tree, over map[string]any, prefix, origin string) error {
	for k, v := range over {
		key := prefix + k
		def, ok := tree[k]
		if !ok {
			return unknownKey(origin+": ", key, tree, prefix)
		}
		if sub, ok := def.(map[string]any); ok {
			vm, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s: %s must be a mapping with keys %s", origin, key, strings.Join(keys(sub, key+"."), ", "))
			}
			if err := merge(sub, vm, key+".", origin); err != nil {
				return err
			}
			continue
		}
		cv, err := coerce(key, def, v)
		if err != nil {
			return fmt.Errorf("%s: %w", origin, err)
		}
		tree[k] = cv
	}
	return nil
}

// apply sets one key=value override.
func apply(tree map[string]any, o string) error {
	key, val, ok := strings.Cut(o, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return fmt.Errorf("override %q: want key=value (for example lr=0.0001 or ema.decay=0.999)", o)
	}
	parts := strings.Split(key, ".")
	node := tree
	for i, p := range parts {
		prefix := strings.Join(parts[:i], ".")
		if prefix != "" {
			prefix += "."
		}
		def, ok := node[p]
		if !ok {
			return unknownKey("", key, node, prefix)
		}
		if i < len(parts)-1 {
			sub, ok := def.(map[string]any)
			if !ok {
				return fmt.Errorf("override %s: %s is not a group of keys", o, prefix+p)
			}
			node = sub
			continue
		}
		if sub, ok := def.(map[string]any); ok {
			return fmt.Errorf("override %s: %s is a group; set one of %s", o, key, strings.Join(keys(sub, key+"."), ", "))
		}
		var v any
		if err := yaml.Unmarshal([]byte(val), &v); err != nil {
			return fmt.Errorf("override %s: %w", o, err)
		}
		cv, err := coerce(key, def, v)
		if err != nil {
			return err
		}
		node[p] = cv
	}
	return nil
}

// coerce checks that v can stand where the default def does. A key with
// Choices takes any single value as its text (checked by Validate), so
// that resume: true, a YAML boolean, still means "true".
func coerce(key string, def, v any) (any, error) {
	if _, ok := Choices[key]; ok {
		def = ""
	}
	switch d := def.(type) {
	case int:
		if i, ok := v.(int); ok {
			return i, nil
		}
		return nil, fmt.Errorf("%s=%v: want an integer", key, show(v))
	case float64:
		switch x := v.(type) {
		case float64:
			return x, nil
		case int:
			return float64(x), nil
		}
		return nil, fmt.Errorf("%s=%v: want a number", key, show(v))
	case bool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("%s=%v: want true or false", key, show(v))
	case string:
		switch v.(type) {
		case map[string]any, []any, nil:
			return nil, fmt.Errorf("%s=%v: want a single value", key, show(v))
		}
		return fmt.Sprint(v), nil
	case []any:
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return nil, fmt.Errorf("%s=%v: want a list like %v", key, show(v), show(d))
		}
		for _, e := range list {
			if _, err := coerce(key, d[0], e); err != nil {
				return nil, fmt.Errorf("%s=%v: every element must be like %v", key, show(v), show(d[0]))
			}
		}
		return list, nil
	}
	return v, nil
}

func show(v any) string {
	if v == nil {
		return "(empty)"
	}
	b, _ := yaml.Marshal(v)
	return strings.TrimSpace(string(b))
}

func unknownKey(origin, key string, level map[string]any, prefix string) error {
	return fmt.Errorf("%sunknown key %q (valid keys: %s)", origin, key, strings.Join(keys(level, prefix), ", "))
}

func keys(m map[string]any, prefix string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, prefix+k)
	}
	sort.Strings(ks)
	return ks
}

// Validate reports values that no run can use, naming the key.
func (c *Config) Validate() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	choice := func(key, v string) {
		if !slices.Contains(Choices[key], v) {
			bad("%s=%s: must be one of %s", key, v, strings.Join(Choices[key], ", "))
		}
	}
	choice("optimizer", c.Optimizer)
	choice("ema.buffers", c.EMA.Buffers)
	choice("gemm", c.GEMM)
	choice("resume", c.Resume)
	choice("precision", c.Precision)
	if !deviceRE.MatchString(c.Device) {
		bad("device=%s: must be cpu or cuda:N (N a GPU index)", c.Device)
	}
	if c.Dataset == "" {
		bad("dataset: empty; give a prepared dataset or a folder of images")
	}
	if len(c.Model.Widths) < 2 {
		bad("model.widths=%v: need at least two levels", c.Model.Widths)
	}
	for _, w := range c.Model.Widths {
		if w < 1 {
			bad("model.widths=%v: widths must be positive", c.Model.Widths)
			break
		}
	}
	if c.Model.BlockDepth < 1 {
		bad("model.block_depth=%d: must be at least 1", c.Model.BlockDepth)
	}
	if n := len(c.Model.Widths) - 1; n >= 63 {
		// 2^n would not fit an int (1 << 64 is 0 in Go)
		bad("model.widths: %d levels; image_size would have to be a multiple of 2^%d", n+1, n)
	} else if f := 1 << max(n, 0); c.ImageSize < f || c.ImageSize%f != 0 {
		bad("image_size=%d: must be a positive multiple of %d (2^(levels−1) for model.widths %v)", c.ImageSize, f, c.Model.Widths)
	}
	if c.BatchSize < 1 {
		bad("batch_size=%d: must be at least 1", c.BatchSize)
	}
	if c.Epochs < 1 {
		bad("epochs=%d: must be at least 1", c.Epochs)
	}
	if !(c.LR > 0) || math.IsInf(c.LR, 1) { // NaN fails every comparison
		bad("lr=%g: must be positive and finite", c.LR)
	}
	if !(c.EMA.Decay >= 0 && c.EMA.Decay < 1) {
		bad("ema.decay=%g: must be in [0, 1)", c.EMA.Decay)
	}
	for _, kv := range []struct {
		key string
		v   int
	}{{"sample_every", c.SampleEvery}, {"checkpoint_every", c.CheckpointEvery}, {"keep_last", c.KeepLast}, {"threads", c.Threads}, {"val_images", c.ValImages}, {"test_images", c.TestImages}} {
		if kv.v < 0 {
			bad("%s=%d: must be 0 or more", kv.key, kv.v)
		}
	}
	if c.SnapshotEvery < 1 {
		bad("snapshot_every=%d: must be at least 1", c.SnapshotEvery)
	}
	if c.StepsInFlight < 1 || c.StepsInFlight > 64 {
		bad("steps_in_flight=%d: must be 1 to 64", c.StepsInFlight)
	}
	if c.Crops < 1 || c.Crops > 16 {
		bad("crops=%d: must be 1 to 16", c.Crops)
	}
	if c.SampleColor != SampleLuminance && c.SampleColor != SampleRaw {
		bad("sample_color=%q: must be %s or %s", c.SampleColor, SampleLuminance, SampleRaw)
	}
	if c.SampleImages < 1 {
		bad("sample_images=%d: must be at least 1", c.SampleImages)
	}
	if c.SampleSteps < 1 || c.SampleSteps > 1000 {
		bad("sample_steps=%d: must be 1 to 1000", c.SampleSteps)
	}
	if c.Store == "" {
		bad("store: empty; give a directory or file:///path")
	}
	if c.OverwriteStore && c.Resume != ResumeNo {
		bad("overwrite_store=true: only with resume=false (it starts a new run, deleting the store's checkpoints first); resume=%s continues the store's run, so drop overwrite_store", c.Resume)
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// ModelConfig is the network shape the configuration asks for:
// model.DefaultConfig with model.widths and model.block_depth. The result
// is a model.Config (an alias of modelspec.Config), ready for model.New.
func (c *Config) ModelConfig() modelspec.Config {
	m := modelspec.DefaultConfig()
	m.Widths = slices.Clone(c.Model.Widths)
	m.BlockDepth = c.Model.BlockDepth
	return m
}

// YAML is the resolved configuration, loadable with Load(file, nil) or
// Parse(data, nil).
func (c *Config) YAML() []byte {
	b, err := yaml.Marshal(c)
	if err != nil {
		panic(err) // plain structs always marshal
	}
	return b
}
