package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/nn"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the compute backend in use",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "tinct %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			be, err := nn.NewCompute("")
			if be == nil {
				fmt.Fprintf(w, "compute backend: %v\n", err)
			} else {
				choice := nn.ComputeChoice()
				fmt.Fprintf(w, "compute backend: %s (TINCT_BACKEND=%s; choices: %v)\n", be.Name(), choice, nn.ComputeNames())
				if err != nil {
					fmt.Fprintf(w, "  %v\n", err)
				} else if dnnlErr := nn.OneDNNError(); choice == "auto" && dnnlErr != nil {
					fmt.Fprintf(w, "  oneDNN's primitives unavailable: %v\n", dnnlErr)
				}
			}
			fmt.Fprintf(w, "gemm backend: %s (available: %v)\n", nn.ActiveGEMM().Name(), nn.GEMMs())
			fmt.Fprintf(w, "kernel workers: %d\n", nn.Workers())
		},
	}
}
