package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/demo"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/trainstate"
)

// checkpointFlags registers --checkpoint (optional: the bundled demo model
// when empty) and the network shape flags that a bare .safetensors state
// dict needs; loadInference reads them.
func checkpointFlags(cmd *cobra.Command, ckpt *string) {
	cmd.Flags().StringVar(ckpt, "checkpoint", "", "checkpoint store, checkpoint directory, or weights .safetensors (default: the bundled demo model, "+demo.Card+")")
	cmd.Flags().Int("image-size", 128, "image size, for a .safetensors state dict without tinct's metadata")
	cmd.Flags().String("widths", "32,64,96,128", "U-Net widths, for a .safetensors state dict without tinct's metadata")
	cmd.Flags().Int("block-depth", 2, "U-Net block depth, for a .safetensors state dict without tinct's metadata")
}

// inference is a network ready to colorize and where it came from.
type inference struct {
	Net  *model.UNet
	Size int    // the training resolution
	Name string // for logs and reports
}

// loadInference loads the network a command colorizes with: the bundled
// demo model when path is empty, an exported weights file (tinct model
// export) or a bare state dict with the shape flags, or a checkpoint
// (directory, or a store's newest valid one): its EMA network, or its live
// weights when live is set.
func loadInference(ctx context.Context, path string, cmd *cobra.Command, live bool) (*inference, error) {
	if path == "" {
		if live {
			return nil, errors.New("the demo model holds EMA weights only; give --checkpoint for the live weights")
		}
		w, err := demo.Load()
		if err != nil {
			return nil, fmt.Errorf("bundled demo model: %w", err)
		}
		slog.Info("no --checkpoint: using the bundled demo model (trained on landscape photos; see "+demo.Card+")", "image_size", w.ImageSize, "step", w.Step)
		return &inference{Net: w.Net, Size: w.ImageSize, Name: demo.Name}, nil
	}
	if strings.HasSuffix(path, ".safetensors") {
		if live {
			return nil, fmt.Errorf("%s holds one network; --weights live needs a checkpoint", path)
		}
		return loadWeightsFile(path, cmd)
	}
	part := trainstate.PartEMA
	if live {
		part = trainstate.PartWeights
	}
	inf, err := loadCheckpoint(ctx, path, part)
	if err != nil {
		return nil, err
	}
	slog.Info("checkpoint", "name", inf.Name, "epoch", inf.Epoch, "step", inf.Step, "image_size", inf.Config.ImageSize, "live_weights", live)
	return &inference{Net: inf.Net, Size: inf.Config.ImageSize, Name: inf.Name}, nil
}

// loadCheckpoint decodes one network (trainstate.PartEMA or PartWeights)
// of a checkpoint: path is a checkpoint directory inside a store, or a
// store (a directory or URL), whose newest valid checkpoint is used.
func loadCheckpoint(ctx context.Context, path, part string) (*trainstate.Inference, error) {
	storePath, name := path, ""
	if _, err := os.Stat(filepath.Join(path, "manifest.json")); err == nil {
		storePath, name = filepath.Dir(path), filepath.Base(path)
	} else if _, err := os.Stat(path); err != nil && !strings.Contains(path, "://") {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	store, err := checkpoint.Open(storePath)
	if err != nil {
		return nil, err
	}
	inf, warns, err := trainstate.LoadPart(ctx, store, name, part)
	for _, w := range warns {
		slog.Warn("checkpoint skipped", "err", w)
	}
	return inf, err
}

// loadWeightsFile reads a .safetensors file: an exported one carries its
// shape and resolution; a bare state dict takes them from the flags.
func loadWeightsFile(path string, cmd *cobra.Command) (*inference, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if w, err := trainstate.ReadWeights(data); err == nil {
		slog.Info("weights", "file", path, "image_size", w.ImageSize, "step", w.Step, "from", w.Source)
		return &inference{Net: w.Net, Size: w.ImageSize, Name: filepath.Base(path)}, nil
	}
	nf := netFlags{}
	nf.widths, _ = cmd.Flags().GetString("widths")
	nf.depth, _ = cmd.Flags().GetInt("block-depth")
	size, _ := cmd.Flags().GetInt("image-size")
	mc, err := nf.config()
	if err != nil {
		return nil, err
	}
	net, err := model.New(mc)
	if err != nil {
		return nil, err
	}
	sd, _, err := model.ReadSafetensors(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := net.LoadStateDict(sd); err != nil {
		return nil, fmt.Errorf("%s: %w (a state dict without tinct's metadata: give its shape with --widths, --block-depth and --image-size)", path, err)
	}
	return &inference{Net: net, Size: size, Name: filepath.Base(path)}, nil
}
