// Command s3push uploads a prepared dataset folder to s3://bucket/prefix,
// where tinct train / tinct coordinator start read it with
// dataset=s3://bucket/prefix:
//
//	go run ./scripts/s3push [--create-bucket] DIR s3://bucket/prefix
//
// The S3 server and credentials come from the environment, as for the
// checkpoint store: TINCT_S3_ENDPOINT, TINCT_S3_INSECURE, TINCT_S3_REGION,
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. --create-bucket creates the
// bucket first if it does not exist (the stores never do).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/dataset"
)

func main() {
	create := flag.Bool("create-bucket", false, "create the bucket if it does not exist")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: s3push [--create-bucket] DIR s3://bucket/prefix")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	dir, url := flag.Arg(0), flag.Arg(1)
	ctx := context.Background()
	opt := checkpoint.EnvOptions()
	if *create {
		made, err := dataset.EnsureBucket(ctx, url, opt)
		if err != nil {
			fmt.Fprintln(os.Stderr, "s3push:", err)
			os.Exit(1)
		}
		if made {
			fmt.Printf("created the bucket of %s\n", url)
		}
	}
	if err := dataset.Upload(ctx, dir, url, opt); err != nil {
		fmt.Fprintln(os.Stderr, "s3push:", err)
		os.Exit(1)
	}
	m, err := dataset.ReadManifest(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3push:", err)
		os.Exit(1)
	}
	fmt.Printf("uploaded %s to %s: train %d, val %d, test %d at %d×%d\n", dir, url,
		m.Splits[dataset.SplitTrain].Count, m.Splits[dataset.SplitVal].Count, m.Splits[dataset.SplitTest].Count, m.ImageSize, m.ImageSize)
}
