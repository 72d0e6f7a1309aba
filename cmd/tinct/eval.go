package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/quality"
)

func newEvalCmd() *cobra.Command {
	var ckpt, data, split, out string
	var steps, limit, batch int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "eval --checkpoint PATH --data DIR",
		Short: "Score colourisations of photos: PSNR, SSIM, colourfulness",
		Long: `Colorizes every image of a prepared split (test by default) — or every
photo of a folder of colour photos, prepared on the fly at the checkpoint's
size (centre crop) — with the checkpoint's EMA network and compares with the
ground truth, beside the baseline that shows the gray image as RGB:

  PSNR          over the three 8-bit channels;
  SSIM          Wang et al., 11×11 Gaussian window σ 1.5, per channel, averaged
                (scikit-image's gaussian_weights=True variant);
  colourfulness Hasler & Süsstrunk (2003) M = σ_rgyb + 0.3·μ_rgyb on 8-bit RGB
                (the ground truth's is printed for scale).

Prints a table and writes it as JSON to --out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			net, size, err := loadInference(cmd.Context(), ckpt, cmd)
			if err != nil {
				return err
			}
			if data == "" {
				return errors.New("--data is required: a prepared dataset (tinct data prepare) or a folder of colour photos")
			}
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
			rep, err := quality.Evaluate(cmd.Context(), net, set, quality.Options{
				Name: fmt.Sprintf("EMA model, %d DDIM steps", steps), Steps: steps, Limit: limit, Batch: batch, Seed: seed,
				Progress: func(done, total int) { fmt.Fprintf(cmd.ErrOrStderr(), "\r%d/%d images", done, total) },
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			n, rows := rep.Images, rep.Rows()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d images of %s\n\n| | PSNR dB | SSIM | colourfulness |\n|---|---:|---:|---:|\n", n, what)
			for _, r := range rows {
				fmt.Fprintf(w, "| %s | %.2f | %.4f | %.1f |\n", r.Name, r.PSNR, r.SSIM, r.Colorfulness)
			}
			fmt.Fprintf(w, "| ground truth | | | %.1f |\n", rep.TruthColorfulness)
			if out != "" {
				b, _ := json.MarshalIndent(map[string]any{"images": n, "data": data, "split": split, "checkpoint": ckpt, "steps": steps, "seed": seed,
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
	cmd.Flags().IntVar(&steps, "steps", 50, "DDIM steps")
	cmd.Flags().IntVar(&limit, "limit", 0, "score only the first N images (0: all)")
	cmd.Flags().IntVar(&batch, "batch", 8, "images colorized at once")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed")
	cmd.MarkFlagRequired("data")
	return cmd
}
