package cuda

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ebitengine/purego"
)

// LibSpec describes one of NVIDIA's libraries and how to recognise it.
type LibSpec struct {
	Key     string   // short name: driver, nvrtc, cublasLt, cublas, cudnn
	What    string   // for messages
	Sonames []string // names the dynamic loader is asked for, preferred first
	Globs   []string // file patterns tried in each directory
	Wheel   []string // directories under site-packages (NVIDIA's Python wheels)
	Symbol  string   // a symbol the library must export
}

// The libraries the backend loads. CUDA 13's wheels put every library but
// cuDNN and NCCL in nvidia/cu13/lib (nvidia-cublas, nvidia-cuda-nvrtc);
// CUDA 12's put each in its own nvidia/<name>/lib.
var (
	DriverLib = LibSpec{Key: "driver", What: "the CUDA driver",
		Sonames: []string{"libcuda.so.1", "libcuda.so"}, Globs: []string{"libcuda.so.1", "libcuda.so"},
		Symbol: "cuInit"}
	NVRTCLib = LibSpec{Key: "nvrtc", What: "NVRTC, the CUDA run-time compiler",
		Sonames: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}, Globs: []string{"libnvrtc.so*"},
		Wheel:  []string{"nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cu12/lib"},
		Symbol: "nvrtcCreateProgram"}
	CUBLASLtLib = LibSpec{Key: "cublasLt", What: "cuBLASLt",
		Sonames: []string{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}, Globs: []string{"libcublasLt.so*"},
		Wheel:  []string{"nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib"},
		Symbol: "cublasLtCreate"}
	CUBLASLib = LibSpec{Key: "cublas", What: "cuBLAS",
		Sonames: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"}, Globs: []string{"libcublas.so*"},
		Wheel:  []string{"nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib"},
		Symbol: "cublasCreate_v2"}
	CUDNNLib = LibSpec{Key: "cudnn", What: "cuDNN 9",
		Sonames: []string{"libcudnn.so.9"}, Globs: []string{"libcudnn.so.9*"},
		Wheel:  []string{"nvidia/cudnn/lib", "nvidia/cu13/lib"},
		Symbol: "cudnnCreate"}
)

// systemDirs are the places drivers and toolkits are installed outside the
// loader's own search path: container runtimes mount the driver under
// /usr/local/nvidia, toolkits live under /usr/local/cuda, WSL has its own.
var systemDirs = []string{
	"/usr/local/nvidia/lib64", "/usr/local/nvidia/lib",
	"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/cuda/targets/sbsa-linux/lib",
	"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib",
}

// Library is a loaded library.
type Library struct {
	Spec   LibSpec
	Path   string // the file, or the soname the loader resolved
	Via    string // where it was found
	Handle uintptr
}

// Attempt is one place looked in and why it did not do.
type Attempt struct{ Where, Why string }

// NotFoundError lists every place a library was looked for.
type NotFoundError struct {
	Spec     LibSpec
	Attempts []Attempt
}

func (e *NotFoundError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s) not found; looked for %s in:", e.Spec.What, e.Spec.Sonames[0], strings.Join(e.Spec.Globs, ", "))
	for _, a := range e.Attempts {
		fmt.Fprintf(&b, "\n  - %s: %s", a.Where, a.Why)
	}
	b.WriteString("\nset TINCT_CUDA_LIBS to a colon-separated list of directories holding it")
	if e.Spec.Key == "driver" {
		b.WriteString(" (the driver's libcuda.so.1 comes with the NVIDIA driver, not with the toolkit or a Python wheel)")
	} else if len(e.Spec.Wheel) > 0 {
		b.WriteString(", or install NVIDIA's wheel into a Python on PATH")
	}
	return b.String()
}

// Finder looks for libraries. DefaultFinder reads the environment; tests
// build their own.
type Finder struct {
	Env      string   // TINCT_CUDA_LIBS
	Loader   bool     // ask the dynamic loader for the bare sonames
	Dirs     []string // system directories
	Pythons  []string // interpreters asked for their site-packages
	Prefixes []string // prefixes whose lib/python3*/{site,dist}-packages are looked at

	open   func(path string) (uintptr, error)
	sym    func(h uintptr, name string) error
	sites  []string
	siteOK bool
	sitesW []Attempt
}

// DefaultFinder looks where this machine's environment says. With
// TINCT_CUDA_LIBS_ONLY set (to anything), it looks in TINCT_CUDA_LIBS alone.
func DefaultFinder() *Finder {
	if os.Getenv("TINCT_CUDA_LIBS_ONLY") != "" {
		return &Finder{Env: os.Getenv("TINCT_CUDA_LIBS")}
	}
	f := &Finder{Env: os.Getenv("TINCT_CUDA_LIBS"), Loader: true, Dirs: systemDirs}
	for _, v := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if p := os.Getenv(v); p != "" {
			f.Dirs = append([]string{filepath.Join(p, "lib64"), filepath.Join(p, "lib")}, f.Dirs...)
		}
	}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			f.Pythons = append(f.Pythons, p)
			// a virtual environment's bin/python3 links out of it: its own
			// prefix is the directory above bin, whatever the link says
			f.Prefixes = append(f.Prefixes, filepath.Dir(filepath.Dir(p)))
		}
	}
	for _, v := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if p := os.Getenv(v); p != "" {
			f.Prefixes = append(f.Prefixes, p)
		}
	}
	home, _ := os.UserHomeDir()
	f.Prefixes = append(f.Prefixes, "/usr/local", "/usr", "/opt/conda", filepath.Join(home, ".local"))
	if venvs, _ := filepath.Glob("/opt/*/.venv"); len(venvs) > 0 {
		f.Prefixes = append(f.Prefixes, venvs...)
	}
	return f
}

func (f *Finder) dlopen(path string) (uintptr, error) {
	if f.open != nil {
		return f.open(path)
	}
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

func (f *Finder) dlsym(h uintptr, name string) error {
	if f.sym != nil {
		return f.sym(h, name)
	}
	_, err := purego.Dlsym(h, name)
	return err
}

// Find loads the library spec describes from the first place that has a
// usable copy: the directories of TINCT_CUDA_LIBS, the dynamic loader's
// search path, the system directories, then NVIDIA's wheels under the
// site-packages of the Pythons found. The error lists every place tried.
func (f *Finder) Find(spec LibSpec) (*Library, error) {
	var tried []Attempt
	if f.Env == "" {
		tried = append(tried, Attempt{"TINCT_CUDA_LIBS", "not set"})
	}
	for _, d := range filepath.SplitList(f.Env) {
		if d == "" {
			continue
		}
		if lib := f.tryDir(spec, d, "TINCT_CUDA_LIBS "+d, &tried); lib != nil {
			return lib, nil
		}
	}
	if f.Loader {
		where := "dynamic loader (LD_LIBRARY_PATH, /etc/ld.so.cache, /lib, /usr/lib)"
		for _, name := range spec.Sonames {
			h, err := f.dlopen(name)
			if err != nil {
				msg := oneLine(err)
				if !strings.HasPrefix(msg, name) {
					msg = name + ": " + msg
				}
				tried = append(tried, Attempt{where, msg})
				continue
			}
			if err := f.dlsym(h, spec.Symbol); err != nil {
				tried = append(tried, Attempt{where, fmt.Sprintf("%s loaded but has no %s", name, spec.Symbol)})
				continue
			}
			return &Library{Spec: spec, Path: name, Via: "the dynamic loader", Handle: h}, nil
		}
	}
	for _, d := range f.Dirs {
		if lib := f.tryDir(spec, d, d, &tried); lib != nil {
			return lib, nil
		}
	}
	if len(spec.Wheel) > 0 {
		sites := f.sitePackages()
		tried = append(tried, f.sitesW...)
		if len(sites) == 0 {
			tried = append(tried, Attempt{"Python site-packages", "none found (no python3 on PATH answered, and none under " + strings.Join(f.Prefixes, ", ") + ")"})
		}
		for _, s := range sites {
			for _, w := range spec.Wheel {
				d := filepath.Join(s, w)
				if lib := f.tryDir(spec, d, d+" (wheel)", &tried); lib != nil {
					return lib, nil
				}
			}
		}
	}
	return nil, &NotFoundError{Spec: spec, Attempts: tried}
}

// tryDir tries the files in dir that match spec, exact sonames first.
func (f *Finder) tryDir(spec LibSpec, dir, where string, tried *[]Attempt) *Library {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		*tried = append(*tried, Attempt{where, "no such directory"})
		return nil
	case err != nil:
		*tried = append(*tried, Attempt{where, oneLine(err)})
		return nil
	case !st.IsDir():
		*tried = append(*tried, Attempt{where, "not a directory"})
		return nil
	}
	cands := candidates(spec, dir)
	if len(cands) == 0 {
		*tried = append(*tried, Attempt{where, "no " + strings.Join(spec.Globs, " or ") + " here"})
		return nil
	}
	for _, p := range cands {
		if err := checkELF(p); err != nil {
			*tried = append(*tried, Attempt{p, err.Error()})
			continue
		}
		h, err := f.dlopen(p)
		if err != nil {
			*tried = append(*tried, Attempt{p, "dlopen: " + oneLine(err)})
			continue
		}
		if err := f.dlsym(h, spec.Symbol); err != nil {
			*tried = append(*tried, Attempt{p, "loaded but has no " + spec.Symbol + " (not " + spec.What + "?)"})
			continue
		}
		return &Library{Spec: spec, Path: p, Via: where, Handle: h}
	}
	return nil
}

// candidates lists the files of dir matching spec's patterns: the sonames
// in their order of preference, then the other matches, newest version
// first.
func candidates(spec LibSpec, dir string) []string {
	var exact, other []string
	seen := map[string]bool{}
	for _, s := range spec.Sonames {
		p := filepath.Join(dir, s)
		if _, err := os.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
			exact = append(exact, p)
			seen[p] = true
		} else if _, err := os.Lstat(p); err == nil { // a dangling link: report it
			exact = append(exact, p)
			seen[p] = true
		}
	}
	for _, g := range spec.Globs {
		ms, _ := filepath.Glob(filepath.Join(dir, g))
		for _, m := range ms {
			if !seen[m] {
				other = append(other, m)
				seen[m] = true
			}
		}
	}
	slices.SortFunc(other, func(a, b string) int { return compareVersions(b, a) })
	return append(exact, other...)
}

// compareVersions orders library file names by the numbers in them.
func compareVersions(a, b string) int {
	na, nb := numbers(a), numbers(b)
	for i := 0; i < len(na) && i < len(nb); i++ {
		if na[i] != nb[i] {
			return na[i] - nb[i]
		}
	}
	if len(na) != len(nb) {
		return len(na) - len(nb)
	}
	return strings.Compare(a, b)
}

func numbers(s string) []int {
	var out []int
	n, in := 0, false
	for _, r := range filepath.Base(s) {
		if r >= '0' && r <= '9' {
			n, in = n*10+int(r-'0'), true
			continue
		}
		if in {
			out = append(out, n)
		}
		n, in = 0, false
	}
	if in {
		out = append(out, n)
	}
	return out
}

// checkELF rejects, without loading it, a file that cannot be a shared
// library for this process.
func checkELF(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read: %v", oneLine(err))
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	head := make([]byte, 4)
	if fh, err := os.Open(path); err != nil {
		return fmt.Errorf("cannot read: %v", oneLine(err))
	} else {
		n, _ := fh.Read(head)
		fh.Close()
		if n < 4 || string(head) != elf.ELFMAG {
			return fmt.Errorf("not an ELF file (starts with %q)", head[:n])
		}
	}
	ef, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not a valid ELF shared library (%v)", oneLine(err))
	}
	defer ef.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "ppc64le": elf.EM_PPC64}[runtime.GOARCH]
	if ef.Class != elf.ELFCLASS64 || (want != 0 && ef.Machine != want) {
		return fmt.Errorf("ELF for %v %v, this process is %s", ef.Class, ef.Machine, runtime.GOARCH)
	}
	if ef.Type != elf.ET_DYN {
		return fmt.Errorf("ELF %v, not a shared library", ef.Type)
	}
	return nil
}

// sitePackages asks each Python for its site-packages (once) and adds the
// lib/python3*/{site,dist}-packages of the prefixes.
func (f *Finder) sitePackages() []string {
	if f.siteOK {
		return f.sites
	}
	f.siteOK = true
	var out []string
	for _, py := range f.Pythons {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := exec.CommandContext(ctx, py, "-c",
			"import site,sys\nfor p in site.getsitepackages()+[site.getusersitepackages()]: print(p)").Output()
		cancel()
		if err != nil {
			f.sitesW = append(f.sitesW, Attempt{py, "asked for its site-packages: " + oneLine(err)})
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	for _, p := range f.Prefixes {
		for _, pat := range []string{"lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages", "lib64/python3*/site-packages"} {
			ms, _ := filepath.Glob(filepath.Join(p, pat))
			out = append(out, ms...)
		}
	}
	seen := map[string]bool{}
	for _, s := range out {
		s = filepath.Clean(s)
		if seen[s] {
			continue
		}
		seen[s] = true
		if st, err := os.Stat(s); err == nil && st.IsDir() {
			f.sites = append(f.sites, s)
		}
	}
	return f.sites
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Libraries are the ones the backend uses; CUDNN is nil when none was found
// (the backend has a convolution path without it).
type Libraries struct {
	Driver, NVRTC, CUBLASLt, CUBLAS, CUDNN *Library
	CUDNNErr                               error
}

// FindAll loads the driver, NVRTC, cuBLASLt and cuBLAS (cuBLASLt first, so
// that cuBLAS found by path resolves its dependency) and, optionally, cuDNN.
func (f *Finder) FindAll() (*Libraries, error) {
	var l Libraries
	var err error
	if l.Driver, err = f.Find(DriverLib); err != nil {
		return nil, err
	}
	if l.NVRTC, err = f.Find(NVRTCLib); err != nil {
		return nil, err
	}
	preloadBuiltins(f, l.NVRTC)
	if l.CUBLASLt, err = f.Find(CUBLASLtLib); err != nil {
		return nil, err
	}
	if l.CUBLAS, err = f.Find(CUBLASLib); err != nil {
		return nil, err
	}
	l.CUDNN, l.CUDNNErr = f.Find(CUDNNLib)
	return &l, nil
}

// preloadBuiltins loads libnvrtc-builtins from NVRTC's own directory: NVRTC
// dlopens it by name at compile time, which fails when NVRTC came from a
// directory the loader does not search.
func preloadBuiltins(f *Finder, nvrtc *Library) {
	if !strings.Contains(nvrtc.Path, "/") {
		return
	}
	ms, _ := filepath.Glob(filepath.Join(filepath.Dir(nvrtc.Path), "libnvrtc-builtins.so*"))
	slices.SortFunc(ms, func(a, b string) int { return compareVersions(b, a) })
	for _, m := range ms {
		if checkELF(m) == nil {
			if _, err := f.dlopen(m); err == nil {
				return
			}
		}
	}
}
