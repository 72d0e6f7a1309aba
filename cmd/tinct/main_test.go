package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestHelpListsCommands(t *testing.T) {
	out, err := run(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"bench", "model", "version"} {
		if !regexp.MustCompile(`(?m)^  ` + c + `\s`).MatchString(out) {
			t.Errorf("--help does not list %q:\n%s", c, out)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.Contains(out, "gemm backend:") {
		t.Fatalf("version: %v\n%s", err, out)
	}
	if _, err := run(t, "--gemm", "nope", "version"); err == nil || !strings.Contains(err.Error(), "choices") {
		t.Fatalf("unknown backend: %v", err)
	}
	// the compute backend: auto by default (onednn where the library
	// loads, else go with the reason); go when asked
	t.Setenv("TINCT_BACKEND", "")
	want := "compute backend: onednn"
	if nn.OneDNNError() != nil {
		want = "oneDNN's primitives unavailable"
	}
	if out, _ := run(t, "version"); !strings.Contains(out, want) || !strings.Contains(out, "TINCT_BACKEND=auto") {
		t.Fatalf("default compute backend: want %q in\n%s", want, out)
	}
	t.Setenv("TINCT_BACKEND", "go")
	if out, _ := run(t, "version"); !strings.Contains(out, "compute backend: go") {
		t.Fatalf("TINCT_BACKEND=go:\n%s", out)
	}
	t.Setenv("TINCT_BACKEND", "nope")
	if _, err := run(t, "version"); err == nil || !strings.Contains(err.Error(), "unknown compute backend") {
		t.Fatalf("TINCT_BACKEND=nope: %v", err)
	}
	t.Setenv("TINCT_BACKEND", "onednn")
	out, _ = run(t, "version")
	if !strings.Contains(out, "compute backend: onednn") && !strings.Contains(out, "onednn unavailable, using go") {
		t.Fatalf("TINCT_BACKEND=onednn:\n%s", out)
	}
}

func tinyFiles(t *testing.T) (dir string, net *model.UNet, x nn.Tensor, nv []float32) {
	t.Helper()
	dir = t.TempDir()
	net, err := model.New(model.Config{Widths: []int{4, 8}, BlockDepth: 2, EmbedDims: 32})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	net.Init(rng)
	for i := len(net.Params) - 15; i < len(net.Params); i++ { // head: non-zero output
		net.Params[i] = float32(rng.NormFloat64())
	}
	x = nn.NewTensor(2, 4, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	nv = []float32{0.3, 0.9}
	if err := model.SaveFile(filepath.Join(dir, "w.safetensors"), net.StateDict(), nil); err != nil {
		t.Fatal(err)
	}
	in := map[string]model.StoredTensor{"x": model.F32(x.Data, 2, 4, 8, 8), "noise_variance": model.F32(nv, 2)}
	if err := model.SaveFile(filepath.Join(dir, "in.safetensors"), in, nil); err != nil {
		t.Fatal(err)
	}
	return dir, net, x, nv
}

func TestModelForward(t *testing.T) {
	dir, net, x, nv := tinyFiles(t)
	outPath := filepath.Join(dir, "out.safetensors")
	if out, err := run(t, "model", "forward", "--widths", "4,8", "--weights", filepath.Join(dir, "w.safetensors"),
		"--input", filepath.Join(dir, "in.safetensors"), "--output", outPath); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got, _, err := model.LoadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := got["eps"].Float32s()
	if err != nil || len(got["eps"].Shape) != 4 || got["eps"].Shape[1] != 3 {
		t.Fatalf("eps: %v %v", got["eps"].Shape, err)
	}
	ar, _ := net.NewArena(2, 8, 8)
	want := net.Forward(ar, x, nv, false)
	for i := range want.Data {
		if eps[i] != want.Data[i] {
			t.Fatalf("eps[%d] = %g, want %g", i, eps[i], want.Data[i])
		}
	}
}

func TestModelForwardErrors(t *testing.T) {
	dir, net, _, _ := tinyFiles(t)
	sd := net.StateDict()
	delete(sd, "mids.1.conv1.bias")
	if err := model.SaveFile(filepath.Join(dir, "missing.safetensors"), sd, nil); err != nil {
		t.Fatal(err)
	}
	if err := model.SaveFile(filepath.Join(dir, "nonv.safetensors"), map[string]model.StoredTensor{"x": model.F32(make([]float32, 256), 1, 4, 8, 8)}, nil); err != nil {
		t.Fatal(err)
	}
	w, in, out := filepath.Join(dir, "w.safetensors"), filepath.Join(dir, "in.safetensors"), filepath.Join(dir, "o.safetensors")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing tensor", []string{"--widths", "4,8", "--weights", filepath.Join(dir, "missing.safetensors"), "--input", in, "--output", out}, "missing tensor mids.1.conv1.bias"},
		{"wrong widths", []string{"--weights", w, "--input", in, "--output", out}, "shape"},
		{"no noise variance", []string{"--widths", "4,8", "--weights", w, "--input", filepath.Join(dir, "nonv.safetensors"), "--output", out}, "noise_variance"},
		{"no such file", []string{"--widths", "4,8", "--weights", filepath.Join(dir, "nope"), "--input", in, "--output", out}, "no such file"},
		{"bad widths flag", []string{"--widths", "4,x", "--weights", w, "--input", in, "--output", out}, "not an integer"},
		{"missing flag", []string{"--weights", w}, "required flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, append([]string{"model", "forward"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestBenchPrintsMetric(t *testing.T) {
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"bench", "train", "--widths", "4,8", "--size", "16", "--batch", "2", "--steps", "1"}, "ms_per_step"},
		{[]string{"bench", "forward", "--widths", "4,8", "--size", "16", "--calls", "1"}, "ms_per_call"},
		{[]string{"bench", "colorize", "--widths", "4,8", "--size", "16", "--steps", "3", "--samples", "2", "--images", "1"}, "ms_per_image"},
	} {
		out, err := run(t, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !regexp.MustCompile(`^` + tc.key + `=[0-9.]+$`).MatchString(lines[len(lines)-1]) {
			t.Fatalf("%v: last line %q, want %s=<float>", tc.args, lines[len(lines)-1], tc.key)
		}
	}
	if _, err := run(t, "bench", "train", "--size", "20"); err == nil || !strings.Contains(err.Error(), "multiple of 8") {
		t.Fatalf("size 20: %v", err)
	}
}

func TestConfigShow(t *testing.T) {
	out, err := run(t, "config", "show")
	if err != nil || !strings.Contains(out, "batch_size: 32") || !strings.Contains(out, "# ") {
		t.Errorf("config show: %v\n%s", err, out)
	}
	out, err = run(t, "config", "show", "--config", "../../configs/sample.yaml", "epochs=7", "ema.decay=0.99")
	if err != nil || !strings.Contains(out, "epochs: 7") || !strings.Contains(out, "decay: 0.99") {
		t.Errorf("config show with overrides: %v\n%s", err, out)
	}
	if _, err := run(t, "config", "show", "epoch=7"); err == nil || !strings.Contains(err.Error(), "epochs") {
		t.Errorf("an unknown key: %v", err)
	}
}

// TestConfigFilesNamePaths: the repository paths the configuration files'
// comments name exist (outputs/ is made by the runs).
func TestConfigFilesNamePaths(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	path := regexp.MustCompile("(?:^|[\\s(`])([a-z][a-z0-9_-]*/[a-z0-9_./-]*[a-z0-9])")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, c := range regexp.MustCompile(`#.*`).FindAllString(string(b), -1) {
			for _, m := range path.FindAllStringSubmatch(c, -1) {
				if _, err := os.Stat("../../" + m[1]); err != nil && !strings.HasPrefix(m[1], "outputs/") {
					t.Errorf("%s names %s: %v", f, m[1], err)
				}
			}
		}
	}
}
