package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/check"
	"github.com/tinct/tinct/cuda/shim"
	"github.com/tinct/tinct/nn/opcheck"
)

// The CUDA backend (issue 13): libraries found at run time, kernels
// compiled by NVRTC and checked against the Go kernels, cuda.Compute the
// compute backend the network runs on where a command is asked for a GPU
// (gpu.go).
// `tinct cuda` is the hidden tool that checks the pieces: docs/gpu.md.

func newCUDACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "cuda",
		Short:  "Check the CUDA backend's pieces: libraries, device, kernels",
		Hidden: true,
	}
	find := &cobra.Command{
		Use:   "find",
		Short: "Show where each of NVIDIA's libraries is found, or every place it was looked for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			f := cuda.DefaultFinder()
			var missing error
			for _, spec := range []cuda.LibSpec{cuda.DriverLib, cuda.NVRTCLib, cuda.CUBLASLtLib, cuda.CUBLASLib, cuda.CUDNNLib} {
				lib, err := f.Find(spec)
				if err != nil {
					fmt.Fprintf(w, "%-9s not found: %v\n", spec.Key, err)
					if spec.Key != "cudnn" && missing == nil {
						missing = fmt.Errorf("%s not found", spec.What)
					}
					continue
				}
				fmt.Fprintf(w, "%-9s %s (via %s)\n", spec.Key, lib.Path, lib.Via)
			}
			return missing
		},
	}
	var gpu int
	probe := &cobra.Command{
		Use:   "probe",
		Short: "Load the driver and describe a GPU",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := cuda.Probe(gpu)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), in)
			return nil
		},
	}
	probe.Flags().IntVar(&gpu, "gpu", 0, "GPU index")
	var st selftestFlags
	selftest := &cobra.Command{
		Use:   "selftest",
		Short: "Check every operation of the CUDA backend, then a tiny network on it, against the Go kernels",
		Long: `Opens GPU --gpu, compiles the embedded kernels with NVRTC for it, and runs
nn/opcheck's op-by-op check on the CUDA backend (cuda.Compute): every
operation of nn.Compute (the convolutions over cuBLAS, BatchNorm, the
element-wise kernels, the loss, Adam, the EMA, copies and the checksum) on
small random inputs, compared with tinct's Go kernels, the check every
backend passes in go test. Then it runs a tiny network on the backend
(forward, a training step, Adam steps, the EMA) against the same network
on the Go kernels. Prints a table (--json: also a file) and exits non-zero
if any comparison fails.

The op check's tolerances are the precision's: fp32's, or, for tf32 and
bf16 products, looser product tolerances (opcheck.TF32, opcheck.BF16). The
network check's are fp32's, which tf32 and bf16 products exceed by design:
judge those runs by their calls (no result has an error), as
scripts/gpu-check.sh does. With --cpu-shim it runs the same checks with
the kernels compiled as C++ by g++ (no GPU needed; what go test does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSelftest(cmd.OutOrStdout(), st) },
	}
	f := selftest.Flags()
	f.IntVar(&st.gpu, "gpu", 0, "GPU index")
	f.BoolVar(&st.shim, "cpu-shim", false, "run on the CPU shim (g++) instead of a GPU")
	f.Uint64Var(&st.seed, "seed", 1, "random inputs' seed")
	f.StringVar(&st.precision, "precision", "fp32", "products' precision: fp32, tf32 or bf16 (the op check uses its tolerances; the network check's are fp32's, which tf32 and bf16 exceed by design)")
	f.StringVar(&st.json, "json", "", "also write the results to this JSON file")
	f.BoolVar(&st.bench, "bench", false, "also time a 3×3 convolution in each precision")
	cmd.AddCommand(find, probe, selftest)
	return cmd
}

type selftestFlags struct {
	gpu       int
	shim      bool
	seed      uint64
	precision string
	json      string
	bench     bool
	// openShim opens the CPU shim's backend (nil: shim.Open; the tests
	// wrap it).
	openShim func() (cuda.Backend, error)
}

type selftestReport struct {
	Backend   string            `json:"backend"`
	Device    string            `json:"device,omitempty"`
	Arch      string            `json:"arch,omitempty"`
	NVRTC     string            `json:"nvrtc,omitempty"`
	Compile   string            `json:"compile,omitempty"`
	Libs      map[string]string `json:"libraries,omitempty"`
	Precision string            `json:"precision"`
	// OpsTol are the op check's tolerances (the network check's are
	// fp32's, in each of its results).
	OpsTol struct {
		Product     number `json:"product"`
		Reduce      number `json:"reduce"`
		Elementwise number `json:"elementwise"`
	} `json:"ops_tolerances"`
	Results []selftestRow `json:"results"`
	Timings []string      `json:"timings,omitempty"`
	Failed  int           `json:"failed"`
}

// selftestRow is one comparison: of the op check (check "ops",
// nn/opcheck: the largest difference relative to the reference's largest
// magnitude, against a tolerance) or of the network check (check
// "network", cuda/check: values within an absolute and relative
// tolerance). Error is a failure to run (the device's: the operation did
// not run); Mismatch a difference that is not a number (a hash, a count).
type selftestRow struct {
	Check    string  `json:"check"`
	Case     string  `json:"case"`
	OK       bool    `json:"ok"`
	Values   int     `json:"values,omitempty"`
	MaxAbs   *number `json:"max_abs_diff,omitempty"`
	MaxRel   *number `json:"max_rel_diff,omitempty"`
	Tol      *number `json:"tolerance,omitempty"`
	Worst    number  `json:"worst_of_tolerance"`
	Err      string  `json:"error,omitempty"`
	Mismatch string  `json:"mismatch,omitempty"`
}

// number is a float64 that JSON can hold when it is not finite (a NaN from
// the device, a ratio to a zero tolerance): NaN, +Inf and -Inf are written
// as those strings, which encoding/json would refuse to write as numbers.
type number float64

func (n number) MarshalJSON() ([]byte, error) {
	switch f := float64(n); {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Inf"`), nil
	default:
		return json.Marshal(f)
	}
}

func ptr(f float64) *number { n := number(f); return &n }

func opsRow(r opcheck.Result) selftestRow {
	row := selftestRow{Check: "ops", Case: r.Case, OK: r.OK(), MaxRel: ptr(r.Rel), Tol: ptr(r.Tol), Mismatch: r.Mismatch}
	switch {
	case math.IsNaN(r.Rel) || r.Rel == 0:
		row.Worst = number(r.Rel)
	default:
		row.Worst = number(r.Rel / r.Tol) // +Inf over a zero tolerance
	}
	if r.Err != nil {
		row.Err = r.Err.Error()
	}
	return row
}

func networkRow(r check.Result) selftestRow {
	row := selftestRow{Check: "network", Case: r.Case, OK: r.OK(), Values: r.Elems, MaxAbs: ptr(r.MaxAbs), Worst: number(r.Worst), Mismatch: r.Mismatch}
	if r.Err != nil {
		row.Err = r.Err.Error()
	}
	return row
}

// uncloseable hides a backend's Close from the Computes made on it
// (cuda.NewCompute closes an io.Closer backend with itself): both checks
// run on one shim, closed at the end.
type uncloseable struct{ cuda.Backend }

func runSelftest(w io.Writer, st selftestFlags) error {
	prec, err := cuda.ParsePrecision(st.precision)
	if err != nil {
		return err
	}
	tol := map[cuda.Precision]opcheck.Tols{cuda.FP32: opcheck.FP32, cuda.TF32: opcheck.TF32, cuda.BF16: opcheck.BF16}[prec]
	rep := selftestReport{Libs: map[string]string{}, Precision: prec.String()}
	rep.OpsTol.Product, rep.OpsTol.Reduce, rep.OpsTol.Elementwise = number(tol.Product), number(tol.Reduce), number(tol.Elementwise)
	var backend cuda.Backend
	var dev *cuda.Device
	if st.shim {
		start := time.Now()
		open := st.openShim
		if open == nil {
			open = func() (cuda.Backend, error) { return shim.Open(false) }
		}
		b, err := open()
		if err != nil {
			return err
		}
		if c, ok := b.(io.Closer); ok {
			defer c.Close()
		}
		backend = b
		rep.Backend = "cpu-shim (kernels compiled as C++ by g++, products by cuda.HostGemm)"
		rep.Compile = time.Since(start).Round(time.Millisecond).String() + " (g++, or its cached build)"
	} else {
		d, err := cuda.Open(st.gpu, prec)
		if err != nil {
			return err
		}
		defer d.Close()
		dev = d
		backend = cuda.DeviceBackend(d)
		ma, mi := d.NVRTCVersion()
		rep.Backend = "gpu"
		rep.Device = d.Info.String()
		rep.Arch = d.Arch
		rep.NVRTC = fmt.Sprintf("%d.%d", ma, mi)
		rep.Compile = d.Compiled.Round(time.Millisecond).String()
		for _, l := range []*cuda.Library{d.Libs.Driver, d.Libs.NVRTC, d.Libs.CUBLASLt, d.Libs.CUBLAS, d.Libs.CUDNN} {
			if l != nil {
				rep.Libs[l.Spec.Key] = l.Path + " (via " + l.Via + ")"
			}
		}
		if d.Libs.CUDNN == nil {
			rep.Libs["cudnn"] = "not found (not needed yet): " + d.Libs.CUDNNErr.Error()
		}
	}
	fmt.Fprintf(w, "backend   %s\n", rep.Backend)
	if rep.Device != "" {
		fmt.Fprintf(w, "device    %s\nnvrtc     %s, target %s, compiled in %s\n", rep.Device, rep.NVRTC, rep.Arch, rep.Compile)
		for _, k := range []string{"driver", "nvrtc", "cublasLt", "cublas", "cudnn"} {
			fmt.Fprintf(w, "%-9s %s\n", k, rep.Libs[k])
		}
	} else {
		fmt.Fprintf(w, "compiled  in %s\n", rep.Compile)
	}
	if st.shim && prec != cuda.FP32 {
		fmt.Fprintf(w, "products  %s asked; the shim's are fp32 (cuda.HostGemm)\n", prec)
	} else {
		fmt.Fprintf(w, "products  %s\n", prec)
	}
	fmt.Fprintf(w, "tolerance op check: %s's (products %.0e, reductions %.0e, element-wise %.0e)\n", prec, tol.Product, tol.Reduce, tol.Elementwise)
	if prec == cuda.FP32 {
		fmt.Fprintln(w, "          network check: fp32's")
	} else {
		fmt.Fprintf(w, "          network check: fp32's, which %s products exceed by design (judge its rows by their calls: no error)\n", prec)
	}
	var runErr error // the first failure to run
	add := func(row selftestRow, line string) {
		fmt.Fprintln(w, line)
		if !row.OK {
			rep.Failed++
		}
		if row.Err != "" && runErr == nil {
			runErr = fmt.Errorf("%s: %s", row.Case, row.Err)
		}
		rep.Results = append(rep.Results, row)
	}
	// every operation on its own (nn/opcheck, the check every backend
	// passes in go test), then the whole network on the backend against
	// the Go kernels: forward, a training step's gradients, Adam, the EMA
	fmt.Fprintln(w, "\nop check (nn/opcheck): every operation of the backend against the Go kernels")
	ops := cuda.NewCompute(uncloseable{backend})
	for _, r := range opcheck.Run(ops, st.seed, tol) {
		add(opsRow(r), r.String())
	}
	ops.Close()
	fmt.Fprintln(w, "\nnetwork check (cuda/check): a tiny U-Net on the backend against the Go kernels")
	for _, r := range check.Network(cuda.NewCompute(uncloseable{backend}), st.seed) {
		add(networkRow(r), r.String())
	}
	if st.bench && dev != nil {
		fmt.Fprintln(w)
		ts, err := check.TimeConv(dev, 32, 96, 64, 64, 20)
		for _, t := range ts {
			fmt.Fprintln(w, t)
			rep.Timings = append(rep.Timings, t.String())
		}
		if err != nil {
			fmt.Fprintln(w, "timing:", err)
			rep.Timings = append(rep.Timings, "error: "+err.Error())
		}
	}
	fmt.Fprintf(w, "\n%d of %d comparisons failed\n", rep.Failed, len(rep.Results))
	if st.json != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("selftest: the JSON report: %w", err)
		}
		if err := os.WriteFile(st.json, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	switch {
	case runErr != nil:
		return fmt.Errorf("selftest: %d of %d comparisons failed; operations failed to run (first: %v)", rep.Failed, len(rep.Results), runErr)
	case rep.Failed > 0:
		return fmt.Errorf("selftest: %d of %d comparisons failed: the CUDA backend disagrees with the Go kernels", rep.Failed, len(rep.Results))
	}
	return nil
}
