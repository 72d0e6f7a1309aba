package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"os"
	"path/filepath"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/quality"
	"github.com/tinct/tinct/track"
)

func newEvalCmd() *cobra.Command {
	var ckpt, data, split, out, weights, grid string
	var steps, limit, batch, samples int
	var seed uint64
	var clip bool
	cmd := &cobra.Command{
		Use:   "eval --data DIR [--checkpoint PATH]",
		Short: "Score colourisations of photos: PSNR, SSIM, colourfulness, best of N",
		Long: `Colorizes every image of a prepared split (test by default) — or every
photo of a folder of colour photos, prepared on the fly at the model's size
(centre crop) — with the checkpoint's EMA network (the bundled demo model
without --checkpoint) and compares with the ground truth, beside the
baseline that shows the gray image as RGB. Rows:

  raw RGB          the network's first sample, as sampled;
  luminance kept   the same sample's colour on the input's own luminance
                   (what tinct colorize and the web app return);
  best of N        per image, the one of --samples colourisations (luminance
                   kept) closest to the truth by PSNR — how stochastic
                   colorizers are usually judged;
  mean of N        per image, the average of the --samples colourisations
                   (luminance kept): an estimate of the posterior mean, the
                   colour that minimises the expected squared error;
  gray as RGB      the baseline: no colour at all.

Scores:
  PSNR          over the three 8-bit channels; "vs gray" is PSNR minus the
                baseline's (above 0: closer to the truth than no colour);
  SSIM          Wang et al., 11×11 Gaussian window σ 1.5, per channel, averaged
                (scikit-image's gaussian_weights=True variant);
  colourfulness Hasler & Süsstrunk (2003) M = σ_rgyb + 0.3·μ_rgyb on 8-bit RGB
                (the ground truth's is printed for scale).

Prints a table and writes it as JSON to --out, and a picture of the first 8
images to --grid: gray input, each sample (luminance kept), ground truth.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return errors.New("--data is required: a prepared dataset (tinct data prepare) or a folder of colour photos")
			}
			if samples < 1 || samples > 64 {
				return fmt.Errorf("--samples %d: must be 1 to 64", samples)
			}
			if weights != "ema" && weights != "live" {
				return fmt.Errorf("--weights %q: ema or live", weights)
			}
			inf, err := loadNetwork(cmd.Context(), ckpt, cmd, weights == "live")
			if err != nil {
				return err
			}
			net, size := inf.Net, inf.ImageSize
			dir, what := data, data+"/"+split
			if _, err := os.Stat(filepath.Join(data, "manifest.json")); err != nil {
				// a folder of photos: prepare all of them, at the
				// checkpoint's size, as one split
				tmp, err := os.MkdirTemp("", "tinct-eval-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir, split, what = filepath.Join(tmp, "set"), "train", data
				if _, err := dataset.Prepare(cmd.Context(), dataset.PrepareOptions{Source: data, Format: "auto", Out: dir, ImageSize: size, Seed: seed}); err != nil {
					return fmt.Errorf("--data %s is not a prepared dataset (no manifest.json), and as a folder of photos: %w", data, err)
				}
			}
			set, err := dataset.Open(dir, split)
			if err != nil {
				return err
			}
			defer set.Close()
			if set.ImageSize() != size {
				return fmt.Errorf("%s has %d×%d images; the checkpoint was trained at %d", data, set.ImageSize(), set.ImageSize(), size)
			}
			if set.Len() == 0 {
				return fmt.Errorf("%s: split %s is empty", data, split)
			}
			name := "EMA model"
			if weights == "live" {
				name = "live weights"
			}
			if !clip {
				name += ", x̂0 not clipped"
			}
			tty := isatty.IsTerminal(os.Stderr.Fd())
			progress := func(done, total int) {}
			if tty {
				progress = func(done, total int) { fmt.Fprintf(cmd.ErrOrStderr(), "\r%d/%d images", done, total) }
			}
			rep, err := quality.Evaluate(cmd.Context(), net, set, quality.Options{
				Name: fmt.Sprintf("%s, %d steps", name, steps), Steps: steps, Limit: limit, Batch: batch, Samples: samples, Clip: clip, Seed: seed, Examples: 8,
				Progress: progress,
			})
			if err != nil {
				return err
			}
			if tty {
				fmt.Fprintln(cmd.ErrOrStderr())
			}
			n, rows := rep.Images, rep.Rows()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d images of %s, model %s\n\n| | PSNR dB | vs gray | SSIM | colourfulness |\n|---|---:|---:|---:|---:|\n", n, what, inf.Name)
			for _, r := range rows {
				fmt.Fprintf(w, "| %s | %.2f | %+.2f | %.4f | %.1f |\n", r.Name, r.PSNR, r.VsGray, r.SSIM, r.Colorfulness)
			}
			fmt.Fprintf(w, "| ground truth | | | | %.1f |\n", rep.TruthColorfulness)
			if grid != "" && len(rep.Examples) > 0 {
				if err := os.MkdirAll(filepath.Dir(grid), 0o755); err != nil {
					return err
				}
				if err := track.SavePNG(grid, examplesGrid(rep.Examples, size)); err != nil {
					return err
				}
				fmt.Fprintf(w, "\npicture: %s (rows: gray, %d sample(s) with the gray's luminance, truth)\n", grid, samples)
			}
			if out != "" {
				b, _ := json.MarshalIndent(map[string]any{"images": n, "data": data, "split": split, "checkpoint": ckpt, "model": inf.Name, "weights": weights,
					"steps": steps, "samples": samples, "clip": clip, "seed": seed,
					"rows": rows, "truth_colorfulness": rep.TruthColorfulness, "psnr_cap_db": quality.PSNRCap}, "", "  ")
				if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(out, b, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
	checkpointFlags(cmd, &ckpt)
	cmd.Flags().StringVar(&data, "data", "", "a prepared dataset (tinct data prepare) or a folder of colour photos")
	cmd.Flags().StringVar(&split, "split", "test", "split to score: test, val or train")
	cmd.Flags().StringVar(&out, "out", "outputs/eval.json", "where to write the results as JSON (empty: nowhere)")
	cmd.Flags().StringVar(&grid, "grid", "outputs/eval.png", "where to write a picture of the first 8 images (empty: nowhere)")
	cmd.Flags().IntVar(&steps, "steps", 20, "DDIM steps")
	cmd.Flags().IntVar(&samples, "samples", 4, "colourisations per image for the best-of-N row (1: no such row)")
	cmd.Flags().BoolVar(&clip, "clip", true, "clamp the sampler's estimate of the clean image to the data range at each step")
	cmd.Flags().StringVar(&weights, "weights", "ema", "ema: the checkpoint's EMA network; live: its live weights")
	cmd.Flags().IntVar(&limit, "limit", 0, "score only the first N images (0: all)")
	cmd.Flags().IntVar(&batch, "batch", 8, "images colorized at once")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed")
	cmd.MarkFlagRequired("data")
	return cmd
}

// examplesGrid lays out scored examples one per column: the gray input,
// each sample, the truth.
func examplesGrid(exs []quality.Example, size int) image.Image {
	rows := make([][]image.Image, 2+len(exs[0].Kept))
	for _, ex := range exs {
		rows[0] = append(rows[0], quality.PlanarImage(ex.Gray, 1, size))
		for j, k := range ex.Kept {
			rows[1+j] = append(rows[1+j], quality.PlanarImage(k, 3, size))
		}
		rows[len(rows)-1] = append(rows[len(rows)-1], quality.PlanarImage(ex.Truth, 3, size))
	}
	return track.Grid(rows, 2)
}
