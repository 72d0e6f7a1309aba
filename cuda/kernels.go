package cuda

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
)

//go:embed kernels/*.cu kernels/common.cuh
var kernelFS embed.FS

// Threads is the block size of every kernel: the reductions' shared arrays
// are this long and assume a power of two.
const Threads = 256

// ArgKind is the type of a kernel parameter.
type ArgKind int

const (
	ArgF32Ptr ArgKind = iota // float* (const or not)
	ArgF64Ptr                // double*
	ArgInt                   // int (32 bits)
	ArgFloat                 // float
)

func (k ArgKind) String() string {
	return [...]string{"float*", "double*", "int", "float"}[k]
}

// Param is one kernel parameter.
type Param struct {
	Name  string
	Kind  ArgKind
	Const bool
}

// KernelInfo is a kernel's signature as parsed from its source.
type KernelInfo struct {
	Name   string
	File   string
	Params []Param
}

// Source returns the CUDA C++ source of all kernels as one translation
// unit: a generated line defining TINCT_THREADS, common.cuh, then each
// kernels/*.cu in name order.
func Source() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#define TINCT_THREADS %d\n", Threads)
	common, err := kernelFS.ReadFile("kernels/common.cuh")
	if err != nil {
		panic(err)
	}
	b.Write(common)
	for _, f := range kernelFiles() {
		src, _ := kernelFS.ReadFile("kernels/" + f)
		fmt.Fprintf(&b, "\n// ---- %s ----\n", f)
		b.Write(src)
	}
	return b.String()
}

func kernelFiles() []string {
	ents, err := fs.ReadDir(kernelFS, "kernels")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".cu") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

var kernelRE = regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)`)

// Kernels parses the signatures of every kernel in the embedded sources.
func Kernels() ([]KernelInfo, error) {
	var out []KernelInfo
	for _, f := range kernelFiles() {
		src, _ := kernelFS.ReadFile("kernels/" + f)
		for _, m := range kernelRE.FindAllStringSubmatch(string(src), -1) {
			k := KernelInfo{Name: m[1], File: f}
			for _, p := range strings.Split(m[2], ",") {
				prm, err := parseParam(p)
				if err != nil {
					return nil, fmt.Errorf("kernel %s (%s): %w", k.Name, f, err)
				}
				k.Params = append(k.Params, prm)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

func parseParam(s string) (Param, error) {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "*", " * ")), " ")
	f := strings.Fields(s)
	if len(f) < 2 {
		return Param{}, fmt.Errorf("parameter %q: no type or name", s)
	}
	p := Param{Name: f[len(f)-1]}
	var ty []string
	for _, w := range f[:len(f)-1] {
		switch w {
		case "const":
			p.Const = true
		case "__restrict__":
		default:
			ty = append(ty, w)
		}
	}
	switch strings.Join(ty, " ") {
	case "float *":
		p.Kind = ArgF32Ptr
	case "double *":
		p.Kind = ArgF64Ptr
	case "int":
		p.Kind = ArgInt
	case "float":
		p.Kind = ArgFloat
	default:
		return Param{}, fmt.Errorf("parameter %q: type %q is none of float*, double*, int, float", s, strings.Join(ty, " "))
	}
	return p, nil
}

// Kernel returns the signature of the named kernel.
func Kernel(name string) (KernelInfo, error) {
	ks, err := Kernels()
	if err != nil {
		return KernelInfo{}, err
	}
	for _, k := range ks {
		if k.Name == name {
			return k, nil
		}
	}
	return KernelInfo{}, fmt.Errorf("cuda: no kernel %q", name)
}
