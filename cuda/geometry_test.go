package cuda

import (
	"math"
	"strings"
	"testing"
)

func TestGridStride(t *testing.T) {
	for _, tc := range []struct {
		n, sms, blocks int
	}{
		{0, 132, 0}, {1, 132, 1}, {256, 132, 1}, {257, 132, 2},
		{132 * 16 * 256, 132, 132 * 16}, {132*16*256 + 1, 132, 132 * 16}, {1 << 30, 132, 132 * 16},
		{1 << 20, 0, 4096}, {1000, 0, 4},
	} {
		g, b, err := GridStride(tc.n, tc.sms)
		if err != nil {
			t.Fatalf("GridStride(%d, %d): %v", tc.n, tc.sms, err)
		}
		if int(g.X) != tc.blocks || g.Y != 1 || g.Z != 1 || b != D1(Threads) {
			t.Errorf("GridStride(%d, %d) = %v %v, want %d blocks of %d", tc.n, tc.sms, g, b, tc.blocks, Threads)
		}
	}
	for _, n := range []int{-1, math.MaxInt32 + 1} {
		if _, _, err := GridStride(n, 132); err == nil {
			t.Errorf("GridStride(%d) accepted", n)
		}
	}
	if g, _, _ := ReduceGrid(1<<30, 132); g.X != MaxPartials {
		t.Errorf("ReduceGrid capped at %d, want %d", g.X, MaxPartials)
	}
	if g, _, _ := ReduceGrid(300, 132); g.X != 2 {
		t.Errorf("ReduceGrid(300) = %d blocks", g.X)
	}
}

// TestGridStrideCovers checks the kernels' loop: for (i = block·dim +
// thread; i < n; i += dim·grid) visits every element once.
func TestGridStrideCovers(t *testing.T) {
	for _, n := range []int{1, 255, 256, 257, 1000, 4096*256 + 3, 5000} {
		for _, sms := range []int{0, 1, 3} {
			g, b, err := GridStride(n, sms)
			if err != nil {
				t.Fatal(err)
			}
			seen := make([]uint8, n)
			stride := int(b.X) * int(g.X)
			for blk := range int(g.X) {
				for th := range int(b.X) {
					for i := blk*int(b.X) + th; i < n; i += stride {
						seen[i]++
					}
				}
			}
			for i, s := range seen {
				if s != 1 {
					t.Fatalf("n=%d sms=%d: element %d visited %d times", n, sms, i, s)
				}
			}
		}
	}
}

func TestPerChannelAndLimits(t *testing.T) {
	g, b, err := PerChannel(96, 32, 64*64)
	if err != nil || g != D1(96) || b != D1(Threads) {
		t.Errorf("PerChannel = %v %v %v", g, b, err)
	}
	if g, _, _ := PerChannel(8, 0, 16); g.X != 0 {
		t.Errorf("empty batch launches %d blocks", g.X)
	}
	if _, _, err := PerChannel(8, 1<<20, 1<<12); err == nil {
		t.Error("per-channel count beyond int32 accepted")
	}
	if err := CheckLimits(D1(100), D1(256), 1024, math.MaxInt32); err != nil {
		t.Error(err)
	}
	if err := CheckLimits(D1(1), D1(2048), 1024, math.MaxInt32); err == nil {
		t.Error("2048 threads accepted")
	}
	if err := CheckLimits(D1(1), D1(0), 1024, math.MaxInt32); err == nil {
		t.Error("empty block accepted")
	}
	if err := CheckLimits(Dim3{1, 70000, 1}, D1(256), 1024, math.MaxInt32); err == nil {
		t.Error("grid.y 70000 accepted")
	}
}

func TestHostGemm(t *testing.T) {
	// row-major A (2×3), B (3×2): C = A·B, written column-major as Cᵀ = Bᵀ·Aᵀ
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{7, 8, 9, 10, 11, 12}
	want := []float32{58, 64, 139, 154}
	c := make([]float32, 4)
	HostGemm(Gemm{M: 2, N: 2, K: 3, Alpha: 1, A: nil, LDA: 2, B: nil, LDB: 3, LDC: 2, Batch: 1}, b, a, c)
	for i := range want {
		if c[i] != want[i] {
			t.Fatalf("C = %v, want %v", c, want)
		}
	}
	// the same with both operands transposed in storage: A stored as Aᵀ, B as Bᵀ
	at := []float32{1, 4, 2, 5, 3, 6}
	bt := []float32{7, 9, 11, 8, 10, 12}
	c2 := []float32{1, 1, 1, 1}
	HostGemm(Gemm{TransA: true, TransB: true, M: 2, N: 2, K: 3, Alpha: 2, LDA: 3, LDB: 2, Beta: -1, LDC: 2, Batch: 1}, bt, at, c2)
	for i := range want {
		if c2[i] != 2*want[i]-1 {
			t.Fatalf("transposed C = %v, want 2·%v − 1", c2, want)
		}
	}
	// batches with strides; stride 0 reuses the operand
	c3 := make([]float32, 8)
	HostGemm(Gemm{M: 2, N: 2, K: 3, Alpha: 1, LDA: 2, StrideA: 0, LDB: 3, StrideB: 0, LDC: 2, StrideC: 4, Batch: 2}, b, a, c3)
	for i := range 2 {
		for j := range want {
			if c3[4*i+j] != want[j] {
				t.Fatalf("batch %d: %v", i, c3)
			}
		}
	}
}

func TestGemmValidate(t *testing.T) {
	buf := func(n int) Mem { return memStub{n} }
	ok := Gemm{M: 4, N: 3, K: 2, A: buf(8), LDA: 4, B: buf(6), LDB: 2, C: buf(12), LDC: 4, Batch: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	batched := ok
	batched.Batch, batched.StrideA, batched.StrideC, batched.C, batched.A = 3, 8, 12, buf(36), buf(24)
	if err := batched.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]Gemm{
		"short A":    func() Gemm { g := ok; g.A = buf(7); return g }(),
		"short C":    func() Gemm { g := batched; g.C = buf(35); return g }(),
		"ld below M": func() Gemm { g := ok; g.LDA = 3; return g }(),
		"transposed": func() Gemm { g := ok; g.TransA = true; return g }(), // A is then 2×4 with ld 4: needs 14 floats
		"nil B":      func() Gemm { g := ok; g.B = nil; return g }(),
		"negative":   func() Gemm { g := ok; g.K = -1; return g }(),
	} {
		if err := g.Validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestArch(t *testing.T) {
	sup := []int{75, 80, 86, 87, 89, 90, 100, 120}
	for _, tc := range []struct {
		cc   [2]int
		want string
	}{{[2]int{9, 0}, "sm_90"}, {[2]int{8, 6}, "sm_86"}, {[2]int{8, 8}, "sm_87"}, {[2]int{12, 1}, "sm_120"}, {[2]int{10, 3}, "sm_100"}} {
		got, err := Arch(tc.cc, sup)
		if err != nil || got != tc.want {
			t.Errorf("Arch(%v) = %s, %v; want %s", tc.cc, got, err, tc.want)
		}
	}
	if _, err := Arch([2]int{7, 0}, sup); err == nil {
		t.Error("compute capability 7.0 accepted by an NVRTC from 7.5 on")
	}
	opts := strings.Join(CompileOptions("sm_90"), " ")
	if !strings.Contains(opts, "--gpu-architecture=sm_90") || !strings.Contains(opts, "--fmad=false") {
		t.Errorf("options %s", opts)
	}
	for _, s := range []string{"fp32", "tf32", "bf16", "TF32", ""} {
		p, err := ParsePrecision(s)
		if err != nil || (s != "" && p.String() != strings.ToLower(s)) {
			t.Errorf("ParsePrecision(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePrecision("fp16"); err == nil {
		t.Error("fp16 accepted")
	}
}
