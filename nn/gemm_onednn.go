package nn

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

func init() {
	if runtime.GOOS == "linux" {
		RegisterGEMM("onednn", 20, loadOneDNN)
	}
}

// oneDNN's dnnl_sgemm is a row-major SGEMM with JIT kernels for the CPU it
// finds (AVX-512 on this project's machines). Debian ships it as libdnnl2,
// which python3-torch depends on.
type onednn struct {
	sgemm func(transA, transB byte, m, n, k int64, alpha float32, a *float32, lda int64, b *float32, ldb int64, beta float32, c *float32, ldc int64) int32
}

func loadOneDNN() (GEMM, error) {
	name := "libdnnl.so.2"
	if p := os.Getenv("TINCT_ONEDNN"); p != "" {
		name = p
	}
	ompDefaults()
	lib, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w (install Debian's libdnnl2)", name, err)
	}
	o := &onednn{}
	if err := register(&o.sgemm, lib, "dnnl_sgemm"); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *onednn) Name() string { return "onednn (libdnnl.so.2)" }

func (o *onednn) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if len(c) < (m-1)*ldc+n || len(a) < extent(transA, m, k, lda) || len(b) < extent(transB, k, n, ldb) {
		panic(fmt.Sprintf("nn: sgemm operands too short for %dx%dx%d", m, n, k))
	}
	ta, tb := byte('N'), byte('N')
	if transA {
		ta = 'T'
	}
	if transB {
		tb = 'T'
	}
	var pa, pb *float32
	if k > 0 {
		pa, pb = unsafe.SliceData(a), unsafe.SliceData(b)
	}
	if st := o.sgemm(ta, tb, int64(m), int64(n), int64(k), alpha, pa, int64(lda), pb, int64(ldb), beta, unsafe.SliceData(c), int64(ldc)); st != 0 {
		panic(fmt.Sprintf("nn: dnnl_sgemm %dx%dx%d failed with status %d", m, n, k, st))
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(c)
}
