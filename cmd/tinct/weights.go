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
// dict needs; loadNetwork reads them.
func checkpointFlags(cmd *cobra.Command, ckpt *string) {
	cmd.Flags().StringVar(ckpt, "checkpoint", "", "checkpoint store, checkpoint directory, or weights .safetensors (default: the bundled demo model, "+demo.Card+")")
	cmd.Flags().Int("image-size", 128, "image size, for a .safetensors state dict without tinct's metadata")
	cmd.Flags().String("widths", "32,64,96,128", "U-Net widths, for a .safetensors state dict without tinct's metadata")
	cmd.Flags().Int("block-depth", 2, "U-Net block depth, for a .safetensors state dict without tinct's metadata")
}

// loadNetwork loads the network a command colorizes with: the bundled
// demo model when path is empty, an exported weights file (tinct model
// export) or a bare state dict with the shape flags, or a checkpoint
// (directory, or a store's newest valid one): its EMA network, or its live
// weights when live is set.
func loadNetwork(ctx context.Context, path string, cmd *cobra.Command, live bool) (*trainstate.Network, error) {
	if path == "" {
		if live {
			return nil, errors.New("the demo model holds EMA weights only; give --checkpoint for the live weights")
		}
		n, err := demo.Load()
		if err != nil {
			return nil, fmt.Errorf("bundled demo model: %w", err)
		}
		slog.Info("no --checkpoint: using the bundled demo model (trained on landscape photos; see "+demo.Card+")", "image_size", n.ImageSize, "step", n.Step)
		return n, nil
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
	n, err := loadCheckpoint(ctx, path, part)
	if err != nil {
		return nil, err
	}
	slog.Info("checkpoint", "name", n.Name, "epoch", n.Epoch, "step", n.Step, "image_size", n.ImageSize, "live_weights", live)
	return n, nil
}

// loadCheckpoint decodes one network (trainstate.PartEMA or PartWeights)
// of a checkpoint: path is a checkpoint directory inside a store, or a
// store (a directory or URL), whose newest valid checkpoint is used.
func loadCheckpoint(ctx context.Context, path, part string) (*trainstate.Network, error) {
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
	n, warns, err := trainstate.LoadNetwork(ctx, store, name, part)
	for _, w := range warns {
		slog.Warn("checkpoint skipped", "err", w)
	}
	return n, err
}

// loadWeightsFile reads a .safetensors file: an exported one carries its
// shape and resolution; a bare state dict takes them from the flags.
func loadWeightsFile(path string, cmd *cobra.Command) (*trainstate.Network, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if n, err := trainstate.ReadWeights(data); err == nil {
		slog.Info("weights", "file", path, "image_size", n.ImageSize, "step", n.Step, "from", n.Name)
		n.Name = filepath.Base(path)
		return n, nil
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
	return &trainstate.Network{Net: net, ImageSize: size, Name: filepath.Base(path)}, nil
}
