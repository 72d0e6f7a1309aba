package cuda

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// noLoader is a dlopen that refuses bare sonames, as a machine without the
// library does, so the tests do not depend on what this machine has.
func noLoader(name string) (uintptr, error) {
	if !strings.Contains(name, "/") {
		return 0, errors.New(name + ": cannot open shared object file: No such file or directory")
	}
	return 0, errors.New("unexpected dlopen of " + name)
}

func TestNotFoundListsEveryPlace(t *testing.T) {
	dir := t.TempDir()
	fakeDir := filepath.Join(dir, "fake")
	write(t, filepath.Join(fakeDir, "libcuda.so.1"), "this is not an ELF file\n", 0o644)
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	f := &Finder{Env: fakeDir + ":" + missing, Loader: true, Dirs: []string{empty}, open: noLoader}
	_, err := f.Find(DriverLib)
	var nf *NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("want a NotFoundError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"the CUDA driver (libcuda.so.1) not found",
		filepath.Join(fakeDir, "libcuda.so.1") + ": not an ELF file (starts with \"this\")",
		"TINCT_CUDA_LIBS " + missing + ": no such directory",
		"dynamic loader (LD_LIBRARY_PATH, /etc/ld.so.cache, /lib, /usr/lib): libcuda.so.1: cannot open shared object file",
		"dynamic loader (LD_LIBRARY_PATH, /etc/ld.so.cache, /lib, /usr/lib): libcuda.so: cannot open shared object file",
		empty + ": no libcuda.so.1 or libcuda.so here",
		"comes with the NVIDIA driver",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	// the driver is never looked for in wheels
	if strings.Contains(msg, "site-packages") {
		t.Errorf("driver looked for in wheels:\n%s", msg)
	}
	if len(nf.Attempts) != 5 {
		t.Errorf("%d attempts, want 5: %+v", len(nf.Attempts), nf.Attempts)
	}
}

func TestNotFoundUnsetEnvAndWheels(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "venv", "lib", "python3.12", "site-packages")
	write(t, filepath.Join(site, "nvidia", "cu13", "lib", "libnvrtc.so.13"), "\x7fELF but truncated", 0o755)
	py := filepath.Join(dir, "bin", "python3")
	write(t, py, "#!/bin/sh\necho "+site+"\necho "+filepath.Join(dir, "nonexistent")+"\n", 0o755)
	broken := filepath.Join(dir, "bin", "python-broken")
	write(t, broken, "#!/bin/sh\nexit 3\n", 0o755)
	f := &Finder{Pythons: []string{py, broken}, open: noLoader}
	_, err := f.Find(NVRTCLib)
	if err == nil {
		t.Fatal("found a library in a fake tree")
	}
	msg := err.Error()
	for _, want := range []string{
		"NVRTC, the CUDA run-time compiler (libnvrtc.so.13) not found",
		"TINCT_CUDA_LIBS: not set",
		filepath.Join(site, "nvidia", "cu13", "lib", "libnvrtc.so.13") + ": not a valid ELF shared library",
		filepath.Join(site, "nvidia", "cuda_nvrtc", "lib") + " (wheel): no such directory",
		broken + ": asked for its site-packages: exit status 3",
		"install NVIDIA's wheel",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestNoPythonAnywhere(t *testing.T) {
	f := &Finder{Prefixes: []string{t.TempDir()}, open: noLoader}
	_, err := f.Find(CUBLASLib)
	if err == nil || !strings.Contains(err.Error(), "Python site-packages: none found") {
		t.Fatalf("got %v", err)
	}
}

// sharedObject compiles a real shared library exporting the given C source.
func sharedObject(t *testing.T, path, src string) {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build a shared library with")
	}
	c := filepath.Join(t.TempDir(), "lib.c")
	write(t, c, src, 0o644)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", path, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
}

func TestFindsRealLibraries(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	sharedObject(t, filepath.Join(bad, "libcuda.so.1"), "int notCuInit(void) { return 0; }\n")
	sharedObject(t, filepath.Join(good, "libcuda.so.1"), "int cuInit(unsigned f) { return (int)f; }\n")
	f := &Finder{Env: bad + ":" + good}
	lib, err := f.Find(DriverLib)
	if err != nil {
		t.Fatal(err)
	}
	if lib.Path != filepath.Join(good, "libcuda.so.1") || lib.Via != "TINCT_CUDA_LIBS "+good || lib.Handle == 0 {
		t.Errorf("found %+v", lib)
	}

	// only the bad one: the error names its missing symbol
	_, err = (&Finder{Env: bad}).Find(DriverLib)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(bad, "libcuda.so.1")+": loaded but has no cuInit") {
		t.Errorf("got %v", err)
	}

	// a venv's wheel, found from the prefix alone (no Python run)
	prefix := filepath.Join(dir, "venv")
	wheel := filepath.Join(prefix, "lib", "python3.12", "site-packages", "nvidia", "cublas", "lib")
	sharedObject(t, filepath.Join(wheel, "libcublas.so.12"), "int cublasCreate_v2(void **h) { return 0; }\n")
	write(t, filepath.Join(wheel, "libcublasLt.so.12"), "not this one", 0o644)
	lib, err = (&Finder{Prefixes: []string{prefix}}).Find(CUBLASLib)
	if err != nil {
		t.Fatal(err)
	}
	if lib.Path != filepath.Join(wheel, "libcublas.so.12") || !strings.HasSuffix(lib.Via, "(wheel)") {
		t.Errorf("found %+v", lib)
	}
}

func TestCandidatesOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"libnvrtc.so.12", "libnvrtc.so.13.0.88", "libnvrtc.so.13", "libnvrtc.so.12.9.86", "libnvrtc-builtins.so.13.0", "libnvrtc.so"} {
		write(t, filepath.Join(dir, n), "", 0o644)
	}
	got := candidates(NVRTCLib, dir)
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	want := "libnvrtc.so.13 libnvrtc.so.12 libnvrtc.so libnvrtc.so.13.0.88 libnvrtc.so.12.9.86"
	if strings.Join(names, " ") != want {
		t.Errorf("candidates %v, want %s", names, want)
	}
}

func TestCheckELF(t *testing.T) {
	dir := t.TempDir()
	txt := filepath.Join(dir, "text.so")
	write(t, txt, "hello", 0o644)
	if err := checkELF(txt); err == nil || !strings.Contains(err.Error(), "not an ELF file") {
		t.Errorf("text file: %v", err)
	}
	if err := checkELF(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if err := checkELF(filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("missing: %v", err)
	}
	// an executable is ELF but not a shared library
	exe, err := os.Executable()
	if err == nil {
		if err := checkELF(exe); err == nil || !strings.Contains(err.Error(), "not a shared library") {
			t.Logf("test binary: %v (position-independent executables are ET_DYN)", err)
		}
	}
}

// fakeDriver builds testdata/fakecuda.c as dir/libcuda.so.1 and points
// TINCT_CUDA_LIBS at it.
func fakeDriver(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/fakecuda.c")
	if err != nil {
		t.Fatal(err)
	}
	sharedObject(t, filepath.Join(dir, "libcuda.so.1"), string(src))
	t.Setenv("TINCT_CUDA_LIBS", dir)
	return dir
}

func TestProbeFakeDriver(t *testing.T) {
	dir := fakeDriver(t)
	in, err := Probe(0)
	if err != nil {
		t.Fatal(err)
	}
	if in.Name != "Fake H200" || in.CC != [2]int{9, 0} || in.SMs != 132 || in.Count != 1 || in.TotalMem != 141<<30 ||
		in.DriverVersion != 13000 || in.MaxThreads != 1024 || in.DriverPath != filepath.Join(dir, "libcuda.so.1") {
		t.Errorf("Probe = %+v", in)
	}
	if s := in.String(); !strings.Contains(s, "Fake H200 (GPU 0 of 1, compute capability 9.0, 132 multiprocessors, 141.0 GiB, driver CUDA 13.0") {
		t.Errorf("Info.String = %s", s)
	}
	if _, err := Probe(1); err == nil || !strings.Contains(err.Error(), "GPU 1: the driver sees 1 device(s)") {
		t.Errorf("Probe(1): %v", err)
	}
	t.Setenv("FAKE_CUDA_NODEV", "1")
	_, err = Probe(0)
	if err == nil || !strings.Contains(err.Error(), "cuInit: CUDA_ERROR_NO_DEVICE (100: no CUDA-capable device is detected)") {
		t.Errorf("no device: %v", err)
	}
}

// TestFakeDriverDefinesEveryBinding keeps testdata/fakecuda.c in step with
// the bindings: Probe binds every driver symbol before it calls any.
func TestFakeDriverDefinesEveryBinding(t *testing.T) {
	src, err := os.ReadFile("testdata/fakecuda.c")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := symFields(&driverAPI{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if !strings.Contains(string(src), "CUresult "+f.names[0]+"(") {
			t.Errorf("testdata/fakecuda.c lacks %s", f.names[0])
		}
	}
}
