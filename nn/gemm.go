package nn

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
)

// GEMM computes single-precision matrix products. Every matrix is
// row-major: C = alpha·op(A)·op(B) + beta·C with op(A) m×k, op(B) k×n.
// Kernels call Sgemm from several goroutines at once, each on its own output;
// an implementation must be safe for that and should run each call on one thread.
type GEMM interface {
	Name() string
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

// A Loader tries to make a GEMM library available, typically by loading a shared
// library at run time; it fails when the library is missing.
type Loader func() (GEMM, error)

type registration struct {
	name     string
	priority int
	load     Loader
}

var (
	registryMu sync.Mutex
	registry   []registration
	active     GEMM
)

// RegisterGEMM makes a GEMM library selectable by name. With "auto", the
// loadable one of highest priority wins.
func RegisterGEMM(name string, priority int, load Loader) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry = append(registry, registration{name, priority, load})
	sort.SliceStable(registry, func(i, j int) bool { return registry[i].priority > registry[j].priority })
}

// GEMMs lists the registered GEMM libraries, preferred first.
func GEMMs() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	var names []string
	for _, r := range registry {
		names = append(names, r.name)
	}
	return names
}

// UseGEMM selects the GEMM library: "auto" (the fastest one that loads)
// or a registered name. It returns what was chosen and why others were not.
func UseGEMM(name string) (GEMM, error) {
	registryMu.Lock()
	defer registryMu.Unlock()
	var errs []error
	for _, r := range registry {
		if name != "auto" && name != r.name {
			continue
		}
		b, err := r.load()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
			continue
		}
		active = b
		if len(errs) > 0 {
			slog.Debug("gemm backends skipped", "err", errors.Join(errs...))
		}
		return b, nil
	}
	if len(errs) == 0 {
		var names []string
		for _, r := range registry {
			names = append(names, r.name)
		}
		return nil, fmt.Errorf("unknown gemm backend %q (choices: auto, %s)", name, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("gemm backend %q unavailable: %w", name, errors.Join(errs...))
}

// ActiveGEMM returns the GEMM library in use. On first use it selects the one
// named by $TINCT_GEMM, or "auto".
func ActiveGEMM() GEMM {
	registryMu.Lock()
	b := active
	registryMu.Unlock()
	if b != nil {
		return b
	}
	name := os.Getenv("TINCT_GEMM")
	if name == "" {
		name = "auto"
	}
	b, err := UseGEMM(name)
	if err != nil {
		panic("nn: TINCT_GEMM: " + err.Error())
	}
	return b
}

func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ActiveGEMM().Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
