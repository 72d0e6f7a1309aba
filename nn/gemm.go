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

// Backend computes single-precision matrix products. Every matrix is
// row-major: C = alpha·op(A)·op(B) + beta·C with op(A) m×k, op(B) k×n.
// Kernels call Sgemm from several goroutines at once, each on its own output;
// a backend must be safe for that and should run each call on one thread.
type Backend interface {
	Name() string
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

// A Loader tries to make a backend available, typically by loading a shared
// library at run time; it fails when the library is missing.
type Loader func() (Backend, error)

type registration struct {
	name     string
	priority int
	load     Loader
}

var (
	registryMu sync.Mutex
	registry   []registration
	active     Backend
)

// RegisterBackend makes a backend selectable by name. With "auto", the
// loadable backend of highest priority wins.
func RegisterBackend(name string, priority int, load Loader) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry = append(registry, registration{name, priority, load})
	sort.SliceStable(registry, func(i, j int) bool { return registry[i].priority > registry[j].priority })
}

// Backends lists the registered backend names, preferred first.
func Backends() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	var names []string
	for _, r := range registry {
		names = append(names, r.name)
	}
	return names
}

// UseBackend selects the GEMM backend: "auto" (the fastest one that loads)
// or a registered name. It returns what was chosen and why others were not.
func UseBackend(name string) (Backend, error) {
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

// ActiveBackend returns the backend in use. On first use it selects the one
// named by $TINCT_GEMM, or "auto".
func ActiveBackend() Backend {
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
	b, err := UseBackend(name)
	if err != nil {
		panic("nn: TINCT_GEMM: " + err.Error())
	}
	return b
}

func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ActiveBackend().Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
