package nn

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

func init() {
	if runtime.GOOS == "linux" || runtime.GOOS == "darwin" || runtime.GOOS == "freebsd" {
		RegisterGEMM("openblas", 10, loadOpenBLAS)
	}
}

// openblasNames are tried in order; TINCT_OPENBLAS names another file.
var openblasNames = []string{"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"}

type openblas struct {
	sgemm func(order, transA, transB, m, n, k int32, alpha float32, a *float32, lda int32, b *float32, ldb int32, beta float32, c *float32, ldc int32)
	path  string
	core  string
}

const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

// loadOpenBLAS opens OpenBLAS with purego (no cgo, no headers) and pins it
// to one thread per call: tinct's kernels run independent products on
// several goroutines instead, which keeps every core busy between products.
func loadOpenBLAS() (GEMM, error) {
	names := openblasNames
	if p := os.Getenv("TINCT_OPENBLAS"); p != "" {
		names = []string{p}
	}
	// OpenBLAS sizes its thread pool when it loads; without this, concurrent
	// single-threaded calls contend for that pool and barely scale (measured:
	// 112 vs 182 GFLOP/s for two at once on two cores).
	if os.Getenv("OPENBLAS_NUM_THREADS") == "" {
		os.Setenv("OPENBLAS_NUM_THREADS", "1")
	}
	// Debian's OpenBLAS 0.3.21 takes AMD Zen 4 for Haswell and runs AVX2
	// kernels; its SkylakeX (AVX-512) kernels do 1.5× the work per second
	// there (BenchmarkSgemmShapes). Use them wherever AVX-512 is present,
	// unless the user chose a core.
	if os.Getenv("OPENBLAS_CORETYPE") == "" && hasAVX512() {
		os.Setenv("OPENBLAS_CORETYPE", "SkylakeX")
	}
	var lib uintptr
	var err error
	var path string
	for _, name := range names {
		lib, err = purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			path = name
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load %v: %w (install Debian's libopenblas0)", names, err)
	}
	o := &openblas{path: path}
	if err := register(&o.sgemm, lib, "cblas_sgemm"); err != nil {
		return nil, err
	}
	var corename func() string
	if register(&corename, lib, "openblas_get_corename") == nil {
		o.core = corename()
	}
	if ct := os.Getenv("OPENBLAS_CORETYPE"); hasAVX512() && !strings.Contains(strings.ToLower(o.core), "skylakex") && !strings.Contains(strings.ToLower(o.core), "cooperlake") {
		slog.Warn("OpenBLAS runs without AVX-512 kernels on a CPU that has them; unset OPENBLAS_CORETYPE for about 1.4× faster training", "OPENBLAS_CORETYPE", ct, "core", o.core)
	}
	var setThreads func(int32)
	if register(&setThreads, lib, "openblas_set_num_threads") == nil {
		setThreads(1)
	}
	return o, nil
}

func register(fptr any, lib uintptr, name string) error {
	sym, err := purego.Dlsym(lib, name)
	if err != nil {
		return fmt.Errorf("symbol %s: %w", name, err)
	}
	purego.RegisterFunc(fptr, sym)
	return nil
}

func (o *openblas) Name() string {
	if o.core == "" {
		return "openblas (" + o.path + ")"
	}
	return "openblas (" + o.path + ", " + o.core + " kernels)"
}

func (o *openblas) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if len(c) < (m-1)*ldc+n || len(a) < extent(transA, m, k, lda) || len(b) < extent(transB, k, n, ldb) {
		panic(fmt.Sprintf("nn: sgemm operands too short for %dx%dx%d", m, n, k))
	}
	ta, tb := int32(cblasNoTrans), int32(cblasNoTrans)
	if transA {
		ta = cblasTrans
	}
	if transB {
		tb = cblasTrans
	}
	var pa, pb *float32
	if k > 0 {
		pa, pb = unsafe.SliceData(a), unsafe.SliceData(b)
	}
	o.sgemm(cblasRowMajor, ta, tb, int32(m), int32(n), int32(k), alpha, pa, int32(lda), pb, int32(ldb), beta, unsafe.SliceData(c), int32(ldc))
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(c)
}
