package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/quality"
)

// evalRow is one line of the eval table.
type evalRow struct {
	Name         string  `json:"name"`
	PSNR         float64 `json:"psnr_db"`
	SSIM         float64 `json:"ssim"`
	Colorfulness float64 `json:"colorfulness"`
}

func newEvalCmd() *cobra.Command {
	var ckpt, data, split, out string
	var steps, limit, batch int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "eval --checkpoint PATH --data DIR",
		Short: "Score colourisations of a test split: PSNR, SSIM, colourfulness",
		Long: `Colorizes every image of a prepared split (test by default) with the
checkpoint's EMA network and compares with the ground truth, beside the
baseline that shows the gray image as RGB:

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
			set, err := dataset.Open(data, split)
			if err != nil {
				return err
			}
			defer set.Close()
			if set.ImageSize() != size {
				return fmt.Errorf("%s has %d×%d images; the checkpoint was trained at %d", data, set.ImageSize(), set.ImageSize(), size)
			}
			n := set.Len()
			if limit > 0 {
				n = min(n, limit)
			}
			if n == 0 {
				return fmt.Errorf("%s: split %s is empty", data, split)
			}
			batch = max(1, min(batch, n))
			sampler, err := model.NewSampler(net, batch, size, size)
			if err != nil {
				return err
			}
			hw := size * size
			var sums [3]evalRow
			var truthColor float64
			rng := rand.New(rand.NewPCG(seed, 0))
			color := make([]float32, 3*hw)
			for start := 0; start < n; start += batch {
				k := min(batch, n-start)
				gray := nn.NewTensor(batch, 1, size, size)
				truths := make([][]uint8, k)
				for i := range k {
					if err := set.Load(start+i, color, gray.Image(i), false); err != nil {
						return err
					}
					truths[i] = quality.ToUint8(color)
				}
				outT, err := sampler.Colorize(cmd.Context(), gray, 1, steps, rng, nil)
				if err != nil {
					return err
				}
				for i := range k {
					gen := quality.ToUint8(outT.Image(i))
					g := quality.ToUint8(gray.Image(i))
					base := append(append(append([]uint8{}, g...), g...), g...)
					for j, img := range [][]uint8{gen, base} {
						sums[j].PSNR += math.Min(quality.PSNR(img, truths[i]), 100)
						sums[j].SSIM += quality.SSIM(img, truths[i], 3, size, size)
						sums[j].Colorfulness += quality.Colorfulness(img, hw)
					}
					truthColor += quality.Colorfulness(truths[i], hw)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "\r%d/%d images", start+k, n)
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			rows := []evalRow{
				{Name: fmt.Sprintf("EMA model, %d DDIM steps", steps), PSNR: sums[0].PSNR / float64(n), SSIM: sums[0].SSIM / float64(n), Colorfulness: sums[0].Colorfulness / float64(n)},
				{Name: "gray as RGB (baseline)", PSNR: sums[1].PSNR / float64(n), SSIM: sums[1].SSIM / float64(n), Colorfulness: sums[1].Colorfulness / float64(n)},
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d images of %s/%s\n\n| | PSNR dB | SSIM | colourfulness |\n|---|---:|---:|---:|\n", n, data, split)
			for _, r := range rows {
				fmt.Fprintf(w, "| %s | %.2f | %.4f | %.1f |\n", r.Name, r.PSNR, r.SSIM, r.Colorfulness)
			}
			fmt.Fprintf(w, "| ground truth | | | %.1f |\n", truthColor/float64(n))
			if out != "" {
				b, _ := json.MarshalIndent(map[string]any{"images": n, "data": data, "split": split, "checkpoint": ckpt, "steps": steps, "seed": seed,
					"rows": rows, "truth_colorfulness": truthColor / float64(n), "psnr_cap_db": 100}, "", "  ")
				if err := os.WriteFile(out, b, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
	checkpointFlags(cmd, &ckpt)
	cmd.Flags().StringVar(&data, "data", "", "prepared dataset directory")
	cmd.Flags().StringVar(&split, "split", "test", "split to score: test, val or train")
	cmd.Flags().StringVar(&out, "out", "eval.json", "where to write the results as JSON (empty: nowhere)")
	cmd.Flags().IntVar(&steps, "steps", 50, "DDIM steps")
	cmd.Flags().IntVar(&limit, "limit", 0, "score only the first N images (0: all)")
	cmd.Flags().IntVar(&batch, "batch", 8, "images colorized at once")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed")
	cmd.MarkFlagRequired("data")
	return cmd
}
