// Package dataset prepares colorization training data and serves it at
// training time.
//
// # Preparing
//
// [Prepare] reads a source — a folder of JPEG/PNG photographs, Hugging Face
// CelebA-HQ parquet shards, or the 128-pixel gray derivative parquet — and
// writes compact, random-access shards plus a manifest to an output folder.
// Every image is center-cropped to a square and resized to S×S with a
// Lanczos (a = 3) filter ([Resize]); its gray version is the ITU-R BT.601
// luma of the resized color, computed exactly as Pillow's convert("L")
// ([ToGray]). Unreadable, undecodable and too-small inputs, and images in
// formats other than JPEG and PNG, are skipped, never fatal: they are counted
// in the manifest and listed in skipped.txt in the output folder, one
// "path<TAB>reason" line each (a parquet row as "file row N"). Files that
// are not images at all (a NOTICE.md beside the photos, a README beside
// parquet shards) are ignored, not counted as bad images.
//
// Splits follow the original colorizer: for parquet sources whose files are
// named by split, the "train" files give the training set and the
// "validation" files give the validation set (their first Val images) and the
// test set (the next Test images); otherwise all usable images are shuffled
// deterministically with the seed and the first Val go to validation, the
// next Test to test and the rest to training.
//
// # On-disk format (version 1)
//
// The output folder holds, per split, shard files named
// "<split>-NNNNN.bin" (split is train, val or test) and one manifest.json.
// A shard is a plain concatenation of fixed-size records; a record is
// 4·S·S bytes: the color image as uint8 in CHW order (all red, then all
// green, then all blue, each row-major), then the gray image (S·S bytes,
// row-major). Every shard but the last of a split holds exactly
// records_per_shard records (at most 64 MiB per shard), so record i of a
// split lives in shard i / records_per_shard at byte offset
// (i % records_per_shard)·record_bytes. The manifest (see [Manifest])
// records the format version, the image size, the per-split counts, each
// shard's file name, record count, byte size and SHA-256, the source, the
// seed and the skip summary. Shards are written under temporary names and
// renamed when complete, and the manifest is written last, so an interrupted
// Prepare never leaves a manifest that points at partial shards.
//
// # Reading
//
// [Open] maps one split of a prepared folder to a [Set], after checking each
// shard's SHA-256 against the manifest, so that a damaged shard stops
// training with an error naming the file instead of feeding it wrong
// pixels. It reads every shard, up to GOMAXPROCS at once, in every new
// process: no file on disk vouches for a shard (verified.json, which older
// versions kept in the folder, is ignored), so bit rot, or a folder copied
// with its times and damaged since, is caught at the next start. At
// 28,000 images of 128×128 (1.8 GB) that costs about 0.9 s (measured with
// `go test -run - -bench BenchmarkOpenVerify ./dataset` on the 2-core VM:
// 0.6 s from the page cache, 0.8–1.0 s with the shards dropped from it).
// Within one process, a shard verified before (by Open, or by [Fetch],
// which checks what it downloads) is not read again while it is the same
// file, by device and inode, with the same size, modification time and
// status-change time; on platforms other than Linux every Open reads
// every shard. [Set.Load] decodes one record into float32 tensors scaled
// to [-1, 1] (v/127.5 − 1), optionally mirrored. Loads use positioned reads, so many goroutines may
// load from one Set at once. [Permutation] gives the deterministic per-epoch
// order of a training run.
package dataset
