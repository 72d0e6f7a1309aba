package cuda

import (
	"regexp"
	"strings"
	"testing"
)

func TestKernelSignatures(t *testing.T) {
	ks, err := Kernels()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"silu_forward", "silu_forward_save", "silu_backward_saved",
		"bn_stats", "bn_eval_stats", "bn_apply", "bn_backward",
		"avgpool2_forward", "avgpool2_backward", "upsample2_forward", "upsample2_backward",
		"copy_view", "add_view", "fill_view", "embed",
		"mse", "sum_f64", "adam", "ema", "im2col3", "bias_forward", "bias_grad", "rot_weights"}
	names := map[string]KernelInfo{}
	for _, k := range ks {
		if _, dup := names[k.Name]; dup {
			t.Errorf("kernel %s defined twice", k.Name)
		}
		names[k.Name] = k
	}
	for _, n := range want {
		if _, ok := names[n]; !ok {
			t.Errorf("kernel %s missing", n)
		}
	}
	if len(ks) != len(want) {
		t.Errorf("%d kernels, want %d", len(ks), len(want))
	}
	// every extern "C" __global__ in the source was parsed
	src := Source()
	if n := len(regexp.MustCompile(`__global__`).FindAllString(src, -1)); n != len(ks) {
		t.Errorf("%d __global__ in the source, %d parsed", n, len(ks))
	}
	bn := names["bn_stats"]
	kinds := []ArgKind{ArgF32Ptr, ArgF32Ptr, ArgF32Ptr, ArgF32Ptr, ArgF32Ptr, ArgInt, ArgInt, ArgInt, ArgInt, ArgFloat, ArgFloat}
	if len(bn.Params) != len(kinds) {
		t.Fatalf("bn_stats params %+v", bn.Params)
	}
	for i, k := range kinds {
		if bn.Params[i].Kind != k {
			t.Errorf("bn_stats param %d (%s) is %v, want %v", i, bn.Params[i].Name, bn.Params[i].Kind, k)
		}
	}
	if !bn.Params[0].Const || bn.Params[1].Const {
		t.Errorf("bn_stats constness: %+v", bn.Params[:2])
	}
	if names["mse"].Params[3].Kind != ArgF64Ptr {
		t.Errorf("mse partials: %+v", names["mse"].Params[3])
	}
}

func TestSourceGeneration(t *testing.T) {
	src := Source()
	if !strings.HasPrefix(src, "#define TINCT_THREADS 256\n") {
		t.Errorf("source starts %q", src[:40])
	}
	for _, f := range kernelFiles() {
		if !strings.Contains(src, "// ---- "+f+" ----") {
			t.Errorf("source lacks %s", f)
		}
	}
	// reductions size their shared arrays by the generated define, never a literal
	for _, m := range regexp.MustCompile(`__shared__\s+\w+\s+\w+\[([^\]]*)\]`).FindAllStringSubmatch(src, -1) {
		if m[1] != "TINCT_THREADS" {
			t.Errorf("shared array sized %q", m[1])
		}
	}
	if Threads&(Threads-1) != 0 {
		t.Errorf("Threads %d is not a power of two", Threads)
	}
}

func TestParseParam(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Param
	}{
		{"const float* __restrict__ x", Param{"x", ArgF32Ptr, true}},
		{" float *y", Param{"y", ArgF32Ptr, false}},
		{"double* partial", Param{"partial", ArgF64Ptr, false}},
		{"int n", Param{"n", ArgInt, false}},
		{"float eps", Param{"eps", ArgFloat, false}},
	} {
		got, err := parseParam(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseParam(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"unsigned n", "half* h", "x", "long long n"} {
		if _, err := parseParam(bad); err == nil {
			t.Errorf("parseParam(%q) accepted", bad)
		}
	}
}

type memStub struct{ n int }

func (m memStub) At(off int) Mem { return memStub{m.n - off} }
func (m memStub) Len() int       { return m.n }

func TestCheckArgs(t *testing.T) {
	k, err := Kernel("ema")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckArgs(k, []any{memStub{4}, memStub{4}, 4, float32(0.9)}); err != nil {
		t.Error(err)
	}
	for _, args := range [][]any{
		{memStub{4}, memStub{4}, 4},                     // too few
		{memStub{4}, memStub{4}, 4, 0.9},                // float64 for float
		{memStub{4}, 3, 4, float32(0.9)},                // int for a pointer
		{memStub{4}, memStub{4}, 1 << 40, float32(0.9)}, // int beyond 32 bits
	} {
		if err := CheckArgs(k, args); err == nil {
			t.Errorf("accepted %v", args)
		}
	}
	if _, err := Kernel("nope"); err == nil {
		t.Error("found kernel nope")
	}
}
