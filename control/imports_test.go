package control

import (
	"bufio"
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// coreDeps are the only packages of this module the core may import, each
// itself held to the same rule: the randomness contract and the training
// position, split out so that dataset, worker and trainstate share them
// without importing the core.
var coreDeps = []string{"internal/rngs", "internal/trainpos"}

// TestStandardLibraryOnly fails when the deterministic core links anything
// beyond the standard library (and coreDeps, which are standard-library
// only too): no I/O, codecs, networks or third-party code. It walks the
// non-test imports with go/build, from source, without running the go
// command.
func TestStandardLibraryOnly(t *testing.T) {
	root, module := moduleRoot(t)
	ctxt := build.Default
	seen := map[string]bool{}
	var walk func(dir, path string, chain []string)
	walk = func(dir, path string, chain []string) {
		pkg, err := ctxt.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, imp := range pkg.Imports {
			if seen[imp] {
				continue
			}
			seen[imp] = true
			via := strings.Join(append(chain, imp), " → ")
			if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
				if !slices.Contains(coreDeps, rel) {
					t.Errorf("%s: the core imports %s; it may use only the standard library and %v", via, imp, coreDeps)
					continue
				}
				walk(filepath.Join(root, filepath.FromSlash(rel)), imp, append(chain, imp))
				continue
			}
			if imp == "C" {
				t.Errorf("%s: the core uses cgo", via)
				continue
			}
			p, err := ctxt.Import(imp, dir, build.FindOnly)
			if err != nil || !p.Goroot {
				t.Errorf("%s: %s is not in the standard library (GOROOT %s): the core may use only the standard library and %v", via, imp, ctxt.GOROOT, coreDeps)
			}
		}
	}
	walk(".", module+"/control", []string{module + "/control"})
	if len(seen) == 0 {
		t.Fatal("found no imports at all: the walk is broken")
	}
}

// moduleRoot returns the module's directory and path, from the go.mod
// above this package.
func moduleRoot(t *testing.T) (dir, module string) {
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return dir, strings.Trim(strings.TrimSpace(m), `"`)
		}
	}
	t.Fatalf("%s: no module line", f.Name())
	return "", ""
}
