package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/spf13/cobra"

	"github.com/tinct/tinct/checkpoint"
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
are validation and test). Undecodable or tiny images, and images in formats
other than JPEG and PNG, are skipped: the log names the first 10 with the
reason, and skipped.txt in --out lists them all (path, a tab, the reason).
Files that are not images (a NOTICE.md beside the photos) are ignored.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt.Source = args[0]
			opt.Progress = prepareProgress(cmd.ErrOrStderr())
			_, statErr := os.Stat(opt.Out)
			sum, err := dataset.Prepare(cmd.Context(), opt)
			if err != nil {
				if os.IsNotExist(statErr) {
					os.RemoveAll(opt.Out) // the folder this command made, and only what it wrote
				}
				var few *dataset.TooFewError
				if errors.As(err, &few) {
					k := max(few.Usable/10, min(1, few.Usable/3)) // a tenth each; one each from 3 images, none below
					return fmt.Errorf("%s has %d usable images, but --val %d and --test %d leave none for training: pass --val %d --test %d", few.Source, few.Usable, few.Val, few.Test, k, k)
				}
				return err
			}
			logSkips(slog.Default(), sum)
			fmt.Fprintln(cmd.OutOrStdout(), prepareResult(sum))
			return nil
		},
	}
	prep.Flags().StringVar(&opt.Out, "out", "", "output directory")
	prep.Flags().StringVar(&opt.Format, "format", "auto", "auto, folder, celebahq or gray128")
	prep.Flags().IntVar(&opt.ImageSize, "image-size", 128, "square image size")
	prep.Flags().IntVar(&opt.Val, "val", 1000, "validation images")
	prep.Flags().IntVar(&opt.Test, "test", 1000, "test images")
	prep.Flags().Uint64Var(&opt.Seed, "seed", 42, "split shuffle seed")
	prep.Flags().IntVar(&opt.Crops, "crops", 1, "square crops per training photo, evenly spaced along its long side (1: the center square; held-out photos are always the center)")
	prep.MarkFlagRequired("out")
	cmd.AddCommand(prep, newDataPushCmd())
	return cmd
}

func newDataPushCmd() *cobra.Command {
	var create bool
	cmd := &cobra.Command{
		Use:   "push DIR s3://bucket/prefix",
		Short: "Upload a prepared dataset to S3, for dataset=s3://bucket/prefix",
		Long: `Uploads a prepared dataset (tinct data prepare) to an S3 prefix, shards first
and the manifest last, so a reader never sees a half-uploaded set. tinct
train and tinct worker join then fetch it with dataset=s3://bucket/prefix
into a local cache, verifying every shard's sha256. The server and
credentials come from the environment, as for the checkpoint store:
TINCT_S3_ENDPOINT, TINCT_S3_INSECURE, TINCT_S3_REGION, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY. --create-bucket creates the bucket when it does not
exist (the stores never create buckets).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, url := args[0], args[1]
			m, err := dataset.ReadManifest(dir)
			if err != nil {
				return err
			}
			opt := checkpoint.EnvOptions()
			if create {
				made, err := dataset.EnsureBucket(cmd.Context(), url, opt)
				if err != nil {
					return err
				}
				if made {
					fmt.Fprintf(cmd.OutOrStdout(), "created the bucket of %s\n", url)
				}
			}
			if err := dataset.Upload(cmd.Context(), dir, url, opt); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "uploaded %s to %s: train %d, val %d, test %d at %d×%d\n", dir, url,
				m.Splits[dataset.SplitTrain].Count, m.Splits[dataset.SplitVal].Count, m.Splits[dataset.SplitTest].Count, m.ImageSize, m.ImageSize)
			return nil
		},
	}
	cmd.Flags().BoolVar(&create, "create-bucket", false, "create the bucket if it does not exist")
	return cmd
}

// logSkipsShown is how many skipped items the log names; skipped.txt in
// the prepared set lists them all.
const logSkipsShown = 10

// logSkips names the first skipped items of a prepare with their reasons,
// and where the full list is.
func logSkips(log *slog.Logger, sum dataset.Summary) {
	if len(sum.Skips) == 0 {
		return
	}
	for _, s := range sum.Skips[:min(len(sum.Skips), logSkipsShown)] {
		log.Warn("skipped", "file", s.Path, "reason", s.Reason)
	}
	list := filepath.Join(sum.Out, dataset.SkippedFile)
	if more := len(sum.Skips) - logSkipsShown; more > 0 {
		log.Warn("more skipped", "more", more, "all_in", list)
	} else {
		log.Info("skipped files listed", "in", list)
	}
}

// prepareResult is the line tinct data prepare prints.
func prepareResult(sum dataset.Summary) string {
	line := fmt.Sprintf("prepared %s: train %d, val %d, test %d", sum.Out, sum.Train, sum.Val, sum.Test)
	if n := len(sum.Skips); n > 0 {
		line += fmt.Sprintf("; skipped %d (listed in %s): %s", n, filepath.Join(sum.Out, dataset.SkippedFile), sum.Reasons())
	}
	if sum.Ignored > 0 {
		line += fmt.Sprintf("; ignored %d (not images)", sum.Ignored)
	}
	return line
}
