package main

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/track"
)

func newColorizeCmd() *cobra.Command {
	var ckpt, out string
	var steps, samples int
	var seed uint64
	var fullRes, clip bool
	var gf gpuFlags
	cmd := &cobra.Command{
		Use:   "colorize IMAGE... [--checkpoint PATH]",
		Short: "Colorize photographs with a trained checkpoint's EMA network",
		Long: `Each image (PNG or JPEG; a colour photo is made gray first; a phone photo is
turned upright by its EXIF orientation) is resized whole, its longer side to
the checkpoint's image size with a Lanczos filter and the rest of the square
filled by mirroring it (nothing is cropped), and colorized with
deterministic DDIM: --samples colourisations per image.

With --full-res (the default) the colours are then carried onto the photo's
own luminance at its own size (the model's Cb/Cr, upsampled with Lanczos;
see docs/serve.md): --out gets NAME-1.png … NAME-K.png at the photo's size,
NAME-1-model.png … at the model's size (the photo's frame only), and
NAME-gray.png, the network's input. With --full-res=false NAME-K.png is the
model-size result.

--checkpoint is a checkpoint store (its newest valid checkpoint is used), one
checkpoint directory inside a store, or an EMA weights file
(.safetensors, with --image-size and the network shape flags).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := colorize.Check(steps, samples); err != nil {
				return fmt.Errorf("--%w", err)
			}
			// the inputs are checked before the checkpoint is loaded: a
			// bad one is reported, the good ones are colorized
			var good, bad []string
			for _, path := range args {
				if err := checkPhoto(path); err != nil {
					bad = append(bad, err.Error())
					continue
				}
				good = append(good, path)
			}
			if len(good) == 0 {
				return fmt.Errorf("nothing to colorize:\n  %s", strings.Join(bad, "\n  "))
			}
			for _, b := range bad {
				slog.Warn("skipped", "input", b)
			}
			n, err := loadNetwork(cmd.Context(), ckpt, cmd, false)
			if err != nil {
				return err
			}
			net, release, err := gf.network(n.Net) // --gpu: the network on the GPU
			if err != nil {
				return err
			}
			defer release()
			pipe, err := colorize.New(net, n.ImageSize, samples, clip)
			if err != nil {
				return err
			}
			defer pipe.Close()
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			for _, path := range good {
				if err := colorizeFile(cmd.Context(), pipe, n.ImageSize, path, out, samples, steps, seed, fullRes); err != nil {
					if cmd.Context().Err() != nil {
						return err
					}
					slog.Warn("not colorized", "input", path, "err", err)
					bad = append(bad, err.Error())
				}
			}
			if len(bad) > 0 {
				return fmt.Errorf("colorized %d of %d photos; these were not:\n  %s", len(args)-len(bad), len(args), strings.Join(bad, "\n  "))
			}
			return nil
		},
	}
	checkpointFlags(cmd, &ckpt)
	cmd.Flags().StringVar(&out, "out", "outputs/colorized", "output directory: NAME-K.png, and with --full-res NAME-K-model.png and NAME-gray.png")
	cmd.Flags().IntVar(&steps, "steps", 100, "DDIM steps (10–100)")
	cmd.Flags().IntVar(&samples, "samples", 1, "colourisations per image (1–8)")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed: the same seed gives the same colours")
	cmd.Flags().BoolVar(&clip, "clip", true, "clamp the sampler's estimate of the clean image to the data range at each step (docs/quality.md: less over-saturated colour)")
	cmd.Flags().BoolVar(&fullRes, "full-res", true, "also write each result at the photo's own size, on its own luminance")
	gf.register(cmd, "run the network")
	return cmd
}

// checkPhoto reads a photo's header: a PNG or JPEG that tinct can decode.
func checkPhoto(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, format, err := image.DecodeConfig(f); err != nil || (format != "png" && format != "jpeg") {
		return fmt.Errorf("%s: not a PNG or JPEG image, or a damaged one", path)
	}
	return nil
}

func colorizeFile(ctx context.Context, pipe *colorize.Pipeline, size int, path, outDir string, samples, steps int, seed uint64, fullRes bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	img, err := dataset.Decode(f) // bounded, and upright by its EXIF orientation
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: not a PNG or JPEG image, or a damaged one: %w", path, err)
	}
	in := colorize.Fit(dataset.ToGray(img), size)
	res, err := pipe.Photo(ctx, in, samples, steps, seed, nil)
	if err != nil {
		return err
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if err := track.SavePNG(filepath.Join(outDir, base+"-gray.png"), in.Gray); err != nil {
		return err
	}
	save := func(name string, img image.Image) error {
		p := filepath.Join(outDir, name)
		if err := track.SavePNG(p, img); err != nil {
			return err
		}
		fmt.Println(p)
		return nil
	}
	for k := range samples {
		if !fullRes {
			if err := save(fmt.Sprintf("%s-%d.png", base, k+1), res.Small(k)); err != nil {
				return err
			}
			continue
		}
		if err := save(fmt.Sprintf("%s-%d.png", base, k+1), res.Full(k)); err != nil {
			return err
		}
		if err := save(fmt.Sprintf("%s-%d-model.png", base, k+1), res.Small(k)); err != nil {
			return err
		}
	}
	return nil
}
