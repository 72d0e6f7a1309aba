package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/track"
)

// prepareProgress draws a progress bar for dataset.Prepare, created when
// the total is first known.
func prepareProgress(out io.Writer) func(done, total int) {
	var once sync.Once
	var p *track.Progress
	return func(done, total int) {
		once.Do(func() { p = track.NewProgress(out, total, "prepare") })
		p.Update(done)
		if done == total {
			p.Done()
		}
	}
}

func newDataCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Prepare training data"}
	var opt dataset.PrepareOptions
	prep := &cobra.Command{
		Use:   "prepare SOURCE --out DIR",
		Short: "Build a training set: resize, gray, split, shards and a manifest",
		Long: `SOURCE is a folder of JPEG/PNG images, the Hugging Face parquet shards of
CelebA-HQ 256×256 (image struct column, label), or the 128-gray derivative
(color and gray PNG columns, source_id). Images are center-cropped and
resized with a Lanczos filter, made gray by ITU-R BT.601 (as PIL's "L"), and
split into train / val / test (CelebA-HQ: the source train split is the
training set; the first --val and next --test of the source validation split
are validation and test). Undecodable or tiny images are skipped and counted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt.Source = args[0]
			opt.Progress = prepareProgress(cmd.ErrOrStderr())
			sum, err := dataset.Prepare(cmd.Context(), opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "prepared %s: train %d, val %d, test %d; skipped %v\n", opt.Out, sum.Train, sum.Val, sum.Test, sum.Skipped)
			return nil
		},
	}
	prep.Flags().StringVar(&opt.Out, "out", "", "output directory")
	prep.Flags().StringVar(&opt.Format, "format", "auto", "auto, folder, celebahq or gray128")
	prep.Flags().IntVar(&opt.ImageSize, "image-size", 128, "square image size")
	prep.Flags().IntVar(&opt.Val, "val", 1000, "validation images")
	prep.Flags().IntVar(&opt.Test, "test", 1000, "test images")
	prep.Flags().Uint64Var(&opt.Seed, "seed", 42, "split shuffle seed")
	prep.MarkFlagRequired("out")
	cmd.AddCommand(prep)
	return cmd
}
