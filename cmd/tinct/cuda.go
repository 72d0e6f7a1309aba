package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/cuda"
	"github.com/tinct/tinct/cuda/check"
	"github.com/tinct/tinct/cuda/shim"
)

// The CUDA backend (issue 13): libraries found at run time, kernels
// compiled by NVRTC and checked against the CPU ops, cuda.Compute the
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
		Short: "Compile the kernels and compare each with the Go CPU ops on random inputs",
		Long: `Opens GPU --gpu, compiles the embedded kernels with NVRTC for it, runs every
kernel (and the convolution over cuBLAS) on small random inputs, and
compares the results with tinct's Go CPU ops, then runs a tiny network on
the CUDA backend (forward, training steps, Adam, the EMA) against the Go
kernels, printing a table; exits non-zero if any comparison fails. With --cpu-shim it runs the same table
with the kernels compiled as C++ by g++ (no GPU needed; what go test does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSelftest(cmd.OutOrStdout(), st) },
	}
	f := selftest.Flags()
	f.IntVar(&st.gpu, "gpu", 0, "GPU index")
	f.BoolVar(&st.shim, "cpu-shim", false, "run on the CPU shim (g++) instead of a GPU")
	f.Uint64Var(&st.seed, "seed", 1, "random inputs' seed")
	f.StringVar(&st.precision, "precision", "fp32", "products' precision for the comparisons: fp32, tf32 or bf16 (tf32 and bf16 fail the fp32 tolerances by design)")
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
}

type selftestReport struct {
	Backend string            `json:"backend"`
	Device  string            `json:"device,omitempty"`
	Arch    string            `json:"arch,omitempty"`
	NVRTC   string            `json:"nvrtc,omitempty"`
	Compile string            `json:"compile,omitempty"`
	Libs    map[string]string `json:"libraries,omitempty"`
	Results []selftestRow     `json:"results"`
	Timings []string          `json:"timings,omitempty"`
	Failed  int               `json:"failed"`
}

type selftestRow struct {
	Case   string  `json:"case"`
	OK     bool    `json:"ok"`
	Elems  int     `json:"values"`
	MaxAbs float64 `json:"max_abs_diff"`
	Worst  float64 `json:"worst_of_tolerance"`
	Err    string  `json:"error,omitempty"`
}

func runSelftest(w io.Writer, st selftestFlags) error {
	prec, err := cuda.ParsePrecision(st.precision)
	if err != nil {
		return err
	}
	rep := selftestReport{Libs: map[string]string{}}
	var backend cuda.Backend
	var dev *cuda.Device
	if st.shim {
		start := time.Now()
		s, err := shim.Open(false)
		if err != nil {
			return err
		}
		defer s.Close()
		backend = s
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
	fmt.Fprintf(w, "products  %s\n\n", prec)
	add := func(r check.Result) {
		fmt.Fprintln(w, r)
		row := selftestRow{Case: r.Case, OK: r.OK(), Elems: r.Elems, MaxAbs: r.MaxAbs, Worst: r.Worst}
		if r.Err != nil {
			row.Err = r.Err.Error()
		}
		if !r.OK() {
			rep.Failed++
		}
		rep.Results = append(rep.Results, row)
	}
	for _, r := range check.Run(backend, st.seed) {
		add(r)
	}
	// then the whole network on the backend (cuda.Compute) against the Go
	// kernels: forward, a training step's gradients, Adam steps, the EMA
	fmt.Fprintln(w)
	for _, r := range check.Network(cuda.NewCompute(backend), st.seed) {
		add(r)
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
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(st.json, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if rep.Failed > 0 {
		return errors.New("selftest: some kernels disagree with the CPU ops")
	}
	return nil
}
