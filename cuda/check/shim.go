package check

import (
	"bufio"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tinct/tinct/cuda"
)

//go:embed shim/shim.h
var shimHeader string

//go:embed shim/main.cpp
var shimMain string

// ShimSource is the C++ translation unit of the CPU shim: the shim header,
// the kernels' own source (exactly what NVRTC compiles), the driver, and a
// dispatch function generated from the kernels' parsed signatures.
func ShimSource() (string, error) {
	ks, err := cuda.Kernels()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(shimHeader)
	b.WriteString("\n// ---- kernels (cuda.Source) ----\n")
	b.WriteString(cuda.Source())
	b.WriteString("\n// ---- driver ----\n")
	b.WriteString(shimMain)
	b.WriteString("\nstatic bool shim_dispatch(const std::string& name, dim3 g, dim3 b) {\n")
	for _, k := range ks {
		var args []string
		for i, p := range k.Params {
			switch p.Kind {
			case cuda.ArgF32Ptr:
				args = append(args, fmt.Sprintf("F(%d)", i))
			case cuda.ArgF64Ptr:
				args = append(args, fmt.Sprintf("D(%d)", i))
			case cuda.ArgInt:
				args = append(args, fmt.Sprintf("I(%d)", i))
			case cuda.ArgFloat:
				args = append(args, fmt.Sprintf("R(%d)", i))
			}
		}
		fmt.Fprintf(&b, "\tif (name == %q) { shim_run(g, b, [] { %s(%s); }); return true; }\n", k.Name, k.Name, strings.Join(args, ", "))
	}
	b.WriteString("\treturn false;\n}\n")
	return b.String(), nil
}

// ErrNoCompiler is returned by BuildShim when there is no g++.
var ErrNoCompiler = errors.New("no g++ on PATH")

// BuildShim compiles the shim into dir and returns the executable's path.
func BuildShim(dir string) (string, error) {
	src, err := ShimSource()
	if err != nil {
		return "", err
	}
	return buildSource(dir, src)
}

// Shim runs kernels on the CPU through the compiled shim. It implements
// Backend; its Mem is host memory.
type Shim struct {
	cmd  *exec.Cmd
	in   *bufio.Writer
	inc  io.Closer
	out  *bufio.Reader
	Runs int // kernel launches
	// Multiprocessors is what SMs reports: grid-stride launches get 16
	// blocks per multiprocessor (0: up to 4096 blocks), so a small value
	// makes their loops go round.
	Multiprocessors int
}

// StartShim starts the compiled shim. With reverse set it runs blocks and
// threads in reverse order: a kernel whose result depends on the order
// (which would race on a GPU) then gives other results.
func StartShim(exe string, reverse ...bool) (*Shim, error) {
	cmd := exec.Command(exe)
	if len(reverse) > 0 && reverse[0] {
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

// Close stops the shim.
func (s *Shim) Close() error {
	s.inc.Close()
	return s.cmd.Wait()
}

type hostBuf struct{ data []float32 }

// HostMem is a host buffer from an offset on.
type HostMem struct {
	b   *hostBuf
	off int
}

func (m HostMem) At(off int) cuda.Mem { return HostMem{m.b, m.off + off} }
func (m HostMem) Len() int            { return len(m.b.data) - m.off }

// Floats is the buffer from the offset on.
func (m HostMem) Floats() []float32 { return m.b.data[m.off:] }

func (s *Shim) SMs() int { return s.Multiprocessors }

// Alloc copies data into a new buffer.
func (s *Shim) Alloc(data []float32) (cuda.Mem, error) {
	return HostMem{b: &hostBuf{data: append([]float32(nil), data...)}}, nil
}

// Read copies n floats out of m.
func (s *Shim) Read(m cuda.Mem, n int) ([]float32, error) {
	h, ok := m.(HostMem)
	if !ok {
		return nil, fmt.Errorf("shim: %T is not host memory", m)
	}
	return append([]float32(nil), h.Floats()[:n]...), nil
}

func (s *Shim) Sync() error { return nil }

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

// Launch sends one launch to the shim and copies the buffers back.
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

// buildSource compiles a given shim source (tests use it to break a kernel).
func buildSource(dir, src string) (string, error) {
	cxx, err := exec.LookPath("g++")
	if err != nil {
		return "", ErrNoCompiler
	}
	cpp := filepath.Join(dir, "shim.cpp")
	if err := os.WriteFile(cpp, []byte(src), 0o644); err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "shim")
	out, err := exec.Command(cxx, shimFlags(exe, cpp)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("g++ %s: %v\n%s", cpp, err, out)
	}
	return exe, nil
}

// shimFlags: no FMA contraction (the kernels are compiled with --fmad=false
// for the GPU, and Go does not fuse on amd64).
func shimFlags(exe, cpp string) []string {
	return []string{"-O1", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Wno-unused-function", "-o", exe, cpp}
}
