package nn

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

func init() {
	RegisterGEMM("go", 0, func() (GEMM, error) { return goBackend{}, nil })
}

// goBackend is the pure-Go fallback (gonum's blocked SGEMM): always present,
// so tinct builds and runs with no system library.
type goBackend struct{}

func (goBackend) Name() string { return "go" }

func (goBackend) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	// gonum checks slice lengths exactly; trim views to the extent used.
	a = a[:extent(transA, m, k, lda)]
	b = b[:extent(transB, k, n, ldb)]
	c = c[:(m-1)*ldc+n]
	gonum.Implementation{}.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// extent is the number of elements a row-major op(X) of rows×cols spans.
func extent(trans bool, rows, cols, ld int) int {
	if trans {
		rows, cols = cols, rows
	}
	if rows == 0 || cols == 0 {
		return 0
	}
	return (rows-1)*ld + cols
}
