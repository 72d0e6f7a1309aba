package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/internal/atomicfile"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

// netFlags selects the network shape on commands that build one.
type netFlags struct {
	widths string
	depth  int
}

func (f *netFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.widths, "widths", "32,64,96,128", "channels per U-Net level, comma-separated")
	cmd.Flags().IntVar(&f.depth, "block-depth", 2, "residual blocks per level")
}

func (f *netFlags) config() (model.Config, error) {
	cfg := model.DefaultConfig()
	cfg.Widths = nil
	for _, s := range strings.Split(f.widths, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return cfg, fmt.Errorf("--widths %q: %q is not an integer", f.widths, s)
		}
		cfg.Widths = append(cfg.Widths, w)
	}
	cfg.BlockDepth = f.depth
	return cfg, cfg.Validate()
}

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Inspect and run network weights (safetensors with PyTorch names)",
	}
	cmd.AddCommand(newModelForwardCmd(), newModelExportCmd())
	return cmd
}

func newModelExportCmd() *cobra.Command {
	var ckpt, out string
	cmd := &cobra.Command{
		Use:   "export --checkpoint STORE|DIR --out FILE.safetensors",
		Short: "Write a checkpoint's EMA network as one weights file",
		Long: `Writes the EMA weights and BatchNorm buffers of a checkpoint (a store's newest
valid one, or one checkpoint directory) as safetensors under PyTorch's names,
with the network's shape, training resolution and step in the file's
metadata. tinct colorize, eval and serve take the file as --checkpoint; it
is a quarter of a checkpoint's size (no live weights, no Adam moments).
The bundled demo model (demo/ema.safetensors) is such a file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			inf, err := loadCheckpoint(cmd.Context(), ckpt, trainstate.PartEMA)
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if err := trainstate.Export(&b, inf); err != nil {
				return err
			}
			if err := atomicfile.Write(out, b.Bytes(), ".export-"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: EMA of %s (epoch %d, step %d, %d×%d), %d bytes\n", out, inf.Name, inf.Epoch, inf.Step, inf.ImageSize, inf.ImageSize, b.Len())
			return nil
		},
	}
	cmd.Flags().StringVar(&ckpt, "checkpoint", "", "checkpoint store (its newest valid checkpoint) or one checkpoint directory")
	cmd.Flags().StringVar(&out, "out", "", "the weights file to write (.safetensors)")
	cmd.MarkFlagRequired("checkpoint")
	cmd.MarkFlagRequired("out")
	return cmd
}

func newModelForwardCmd() *cobra.Command {
	var nf netFlags
	var weights, input, output string
	cmd := &cobra.Command{
		Use:   "forward --weights W.safetensors --input IN.safetensors --output OUT.safetensors",
		Short: "Run the network once in eval mode on given inputs",
		Long: `Loads weights and BatchNorm buffers saved with PyTorch's names (a state dict
that load_state_dict(strict=True) accepts), reads the tensors x [N,4,H,W]
float32 (noisy colour, then gray) and noise_variance [N] from --input, runs the
network in eval mode and writes the predicted noise as eps [N,3,H,W] to
--output. Use it to check a checkpoint against another framework.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := nf.config()
			if err != nil {
				return err
			}
			net, err := model.New(cfg)
			if err != nil {
				return err
			}
			sd, _, err := model.LoadFile(weights)
			if err != nil {
				return fmt.Errorf("weights: %w", err)
			}
			if err := net.LoadStateDict(sd); err != nil {
				return fmt.Errorf("weights %s: %w", weights, err)
			}
			in, _, err := model.LoadFile(input)
			if err != nil {
				return fmt.Errorf("input: %w", err)
			}
			x, err := tensorArg(in, "x", input, 4)
			if err != nil {
				return err
			}
			nvT, ok := in["noise_variance"]
			if !ok {
				return fmt.Errorf("input %s has no tensor noise_variance [N]", input)
			}
			nv, err := nvT.Float32s()
			if err != nil || len(nvT.Shape) != 1 || nvT.Shape[0] != x.N {
				return fmt.Errorf("input %s: noise_variance must be float32 [%d], got %s %v", input, x.N, nvT.DType, nvT.Shape)
			}
			ar, err := net.NewArena(x.N, x.H, x.W)
			if err != nil {
				return err
			}
			eps := net.Forward(ar, x, nv, false)
			out := map[string]model.StoredTensor{"eps": model.F32(eps.Data, eps.Shape()...)}
			if err := model.SaveFile(output, out, map[string]string{"producer": "tinct model forward"}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote eps %v to %s\n", eps.Shape(), output)
			return nil
		},
	}
	nf.register(cmd)
	cmd.Flags().StringVar(&weights, "weights", "", "state dict (safetensors)")
	cmd.Flags().StringVar(&input, "input", "", "inputs x and noise_variance (safetensors)")
	cmd.Flags().StringVar(&output, "output", "", "where to write eps (safetensors)")
	for _, f := range []string{"weights", "input", "output"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}

// tensorArg decodes a float32 NCHW tensor with the given channel count.
func tensorArg(ts map[string]model.StoredTensor, name, file string, channels int) (nn.Tensor, error) {
	t, ok := ts[name]
	if !ok {
		return nn.Tensor{}, fmt.Errorf("%s has no tensor %s", file, name)
	}
	v, err := t.Float32s()
	if err != nil || len(t.Shape) != 4 || t.Shape[1] != channels {
		return nn.Tensor{}, fmt.Errorf("%s: tensor %s must be float32 [N,%d,H,W], got %s %v", file, name, channels, t.DType, t.Shape)
	}
	return nn.TensorFrom(v, t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]), nil
}
