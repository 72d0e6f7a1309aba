// Package shim runs package cuda's kernels on the CPU: the same source
// NVRTC compiles, prefixed with a header (cpp/shim.h) that runs each grid as
// loops and each block's threads as fibers, compiled by g++ into a program
// that takes launches through a pipe; cuBLAS's products are cuda.HostGemm.
// A Shim is a cuda.Backend whose memory is host memory, so the CUDA
// backend (cuda.Compute) runs here without a GPU: the op-by-op check
// (nn/opcheck), the network check (package cuda/check) and, as the
// "cuda-shim" compute backend, the model's own tests
// (TINCT_BACKEND=cuda-shim, with this package imported).
package shim

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/nn"
)

func init() {
	nn.RegisterCompute("cuda-shim", func() (nn.Compute, error) {
		s, err := Open(false)
		if err != nil {
			return nil, err
		}
		return cuda.NewCompute(s), nil
	})
}

//go:embed cpp/shim.h
var header string

//go:embed cpp/main.cpp
var driver string

// Source is the C++ translation unit of the shim: the header, the
// kernels' own source (exactly what NVRTC compiles), the driver, and a
// dispatch function generated from the kernels' parsed signatures.
func Source() (string, error) {
	ks, err := cuda.Kernels()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n// ---- kernels (cuda.Source) ----\n")
	b.WriteString(cuda.Source())
	b.WriteString("\n// ---- driver ----\n")
	b.WriteString(driver)
	b.WriteString("\nstatic bool shim_dispatch(const std::string& name, dim3 g, dim3 b) {\n")
	for _, k := range ks {
		var args []string
		for i, p := range k.Params { // main.cpp's accessors, by cuda.ArgKind
			args = append(args, fmt.Sprintf("%c(%d)", "FDIR"[p.Kind], i))
		}
		fmt.Fprintf(&b, "\tif (name == %q) { shim_run(g, b, [] { %s(%s); }); return true; }\n", k.Name, k.Name, strings.Join(args, ", "))
	}
	b.WriteString("\treturn false;\n}\n")
	return b.String(), nil
}

// ErrNoCompiler is why there is no shim: no g++ on PATH.
var ErrNoCompiler = errors.New("no g++ on PATH: the CUDA kernels cannot be compiled for the CPU")

// flags: no FMA contraction (the kernels are compiled with --fmad=false
// for the GPU, and Go does not fuse on amd64); no shadow stack, which the
// fibers' own switch (cpp/shim.h) would break.
var flags = []string{"-O1", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-fcf-protection=none", "-Wall", "-Wno-unused-function"}

var built struct {
	once sync.Once
	exe  string
	err  error
}

// Executable is the compiled shim, built once per process and kept in the
// user's cache directory under a hash of its source and flags, so that
// test binaries and runs after the first (a few seconds of g++) reuse it.
func Executable() (string, error) {
	built.once.Do(func() {
		src, err := Source()
		if err != nil {
			built.err = err
			return
		}
		sum := sha256.Sum256([]byte(strings.Join(flags, " ") + "\n" + src))
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		dir = filepath.Join(dir, "tinct")
		exe := filepath.Join(dir, "cuda-shim-"+hex.EncodeToString(sum[:8]))
		if _, err := os.Stat(exe); err == nil {
			built.exe = exe
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			built.err = err
			return
		}
		tmp, err := os.MkdirTemp(dir, "build-")
		if err != nil {
			built.err = err
			return
		}
		defer os.RemoveAll(tmp)
		out, err := BuildSource(tmp, src)
		if err == nil {
			// a rename is atomic: a binary building it at the same time
			// finds either none or a whole one
			err = os.Rename(out, exe)
		}
		built.exe, built.err = exe, err
	})
	return built.exe, built.err
}

// BuildSource compiles a shim source into dir (tests break a kernel in
// it) and returns the executable's path.
func BuildSource(dir, src string) (string, error) {
	cxx, err := exec.LookPath("g++")
	if err != nil {
		return "", ErrNoCompiler
	}
	cpp := filepath.Join(dir, "shim.cpp")
	if err := os.WriteFile(cpp, []byte(src), 0o644); err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "shim")
	out, err := exec.Command(cxx, append(flags, "-o", exe, cpp)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("g++ %s: %v\n%s", cpp, err, out)
	}
	return exe, nil
}

// Shim is one running shim process, a cuda.Backend. It serves one caller
// at a time.
type Shim struct {
	cmd    *exec.Cmd
	in     *bufio.Writer
	inc    io.Closer
	out    *bufio.Reader
	closed bool
	Runs   int // kernel launches
	// Multiprocessors is what SMs reports: grid-stride launches get 16
	// blocks per multiprocessor (0: up to 4096 blocks), so a small value
	// makes their loops go round.
	Multiprocessors int
}

// Open starts the shim (built by Executable).
func Open(reverse bool) (*Shim, error) {
	exe, err := Executable()
	if err != nil {
		return nil, fmt.Errorf("cuda-shim: %w", err)
	}
	return Start(exe, reverse)
}

// Start starts the shim executable exe. With reverse set it runs blocks
// and threads in reverse order: a kernel whose result depends on the
// order (which would race on a GPU) then gives other results.
func Start(exe string, reverse bool) (*Shim, error) {
	cmd := exec.Command(exe)
	if reverse {
		cmd.Env = append(os.Environ(), "TINCT_SHIM_REVERSE=1")
	}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	r, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Shim{cmd: cmd, in: bufio.NewWriter(w), inc: w, out: bufio.NewReader(r)}, nil
}

// Close stops the shim; a cuda.Compute on it closes it with itself.
func (s *Shim) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.inc.Close()
	return s.cmd.Wait()
}

func (s *Shim) Name() string {
	return "cuda-shim (the CUDA kernels compiled as C++ by g++, products by cuda.HostGemm)"
}

type hostBuf struct{ data []float32 }

// HostMem is a host buffer from an offset on.
type HostMem struct {
	b   *hostBuf
	off int
}

func (m HostMem) At(off int) cuda.Mem {
	if off < 0 || off > m.Len() {
		panic(fmt.Sprintf("shim: offset %d of a buffer of %d floats", off, m.Len()))
	}
	return HostMem{m.b, m.off + off}
}
func (m HostMem) Len() int { return len(m.b.data) - m.off }

// Floats is the buffer from the offset on.
func (m HostMem) Floats() []float32 { return m.b.data[m.off:] }

func (s *Shim) SMs() int    { return s.Multiprocessors }
func (s *Shim) Sync() error { return nil }

func (s *Shim) Alloc(n int) (cuda.Mem, error) { return HostMem{b: &hostBuf{make([]float32, n)}}, nil }

// Free leaves the memory to Go's collector.
func (s *Shim) Free(cuda.Mem) error { return nil }

func floats(m cuda.Mem, n int, op string) ([]float32, error) {
	h, ok := m.(HostMem)
	if !ok {
		return nil, fmt.Errorf("shim: %s: %T is not host memory", op, m)
	}
	if h.Len() < n {
		return nil, fmt.Errorf("shim: %s of %d floats with a buffer of %d", op, n, h.Len())
	}
	return h.Floats()[:n], nil
}

func (s *Shim) Upload(dst cuda.Mem, src []float32) error {
	d, err := floats(dst, len(src), "upload")
	copy(d, src)
	return err
}

func (s *Shim) Download(dst []float32, src cuda.Mem) error {
	f, err := floats(src, len(dst), "download")
	copy(dst, f)
	return err
}

// Gemm runs cuda.HostGemm: the shim has no cuBLAS.
func (s *Shim) Gemm(g cuda.Gemm) error {
	if err := g.Validate(); err != nil {
		return err
	}
	a, ok1 := g.A.(HostMem)
	b, ok2 := g.B.(HostMem)
	c, ok3 := g.C.(HostMem)
	if !ok1 || !ok2 || !ok3 {
		return errors.New("shim: gemm operands are not host memory")
	}
	cuda.HostGemm(g, a.Floats(), b.Floats(), c.Floats())
	return nil
}

// Launch sends one launch to the shim with every buffer it names, whole,
// and copies them back (cpp/main.cpp has the protocol).
func (s *Shim) Launch(kernel string, grid, block cuda.Dim3, args ...any) error {
	info, err := cuda.Kernel(kernel)
	if err != nil {
		return err
	}
	if err := cuda.CheckArgs(info, args); err != nil {
		return err
	}
	if grid.Count() == 0 {
		return nil
	}
	if s.closed {
		return errors.New("shim: closed")
	}
	var bufs []*hostBuf
	index := map[*hostBuf]uint32{}
	for _, a := range args {
		if m, ok := a.(HostMem); ok {
			if _, seen := index[m.b]; !seen {
				index[m.b] = uint32(len(bufs))
				bufs = append(bufs, m.b)
			}
		} else if _, ok := a.(cuda.Mem); ok {
			return fmt.Errorf("shim: %T is not host memory", a)
		}
	}
	le := binary.LittleEndian
	w := s.in
	put32 := func(v uint32) { w.Write(le.AppendUint32(nil, v)) }
	put64 := func(v uint64) { w.Write(le.AppendUint64(nil, v)) }
	put32(uint32(len(bufs)))
	for _, b := range bufs {
		put64(uint64(len(b.data)))
		if err := binary.Write(w, le, b.data); err != nil {
			return err
		}
	}
	put32(uint32(len(kernel)))
	w.WriteString(kernel)
	for _, d := range []uint32{grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z} {
		put32(d)
	}
	put32(uint32(len(args)))
	for _, a := range args {
		switch v := a.(type) {
		case HostMem:
			w.WriteByte(0)
			put32(index[v.b])
			put64(uint64(v.off))
		case int:
			w.WriteByte(1)
			put32(uint32(int32(v)))
		case float32:
			w.WriteByte(2)
			put32(math.Float32bits(v))
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	var status uint32
	if err := binary.Read(s.out, le, &status); err != nil {
		return fmt.Errorf("shim: %s: %w", kernel, err)
	}
	for _, b := range bufs {
		if err := binary.Read(s.out, le, b.data); err != nil {
			return fmt.Errorf("shim: %s: %w", kernel, err)
		}
	}
	if status != 0 {
		return fmt.Errorf("shim: kernel %s not in the dispatch table", kernel)
	}
	s.Runs++
	return nil
}

var _ cuda.Backend = (*Shim)(nil)
