package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// BenchmarkResize measures the CelebA-HQ case: a 256×256 image to 128×128.
func BenchmarkResize(b *testing.B) {
	img := pattern(256, 256, 1)
	for b.Loop() {
		Resize(img, 128)
	}
}

// BenchmarkDecodeResize adds JPEG decoding, as Prepare does per image.
func BenchmarkDecodeResize(b *testing.B) {
	data := encodeJPEG(b, pattern(256, 256, 1))
	for b.Loop() {
		img, err := Decode(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		Resize(img, 128)
	}
}

// BenchmarkLoad measures one Load of a 128×128 record with a flip.
func BenchmarkLoad(b *testing.B) {
	src := b.TempDir()
	writeFile(b, src, "x.png", encodePNG(b, pattern(128, 128, 1)))
	out := b.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 128}); err != nil {
		b.Fatal(err)
	}
	s, err := Open(out, SplitTrain)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, g := make([]float32, 3*128*128), make([]float32, 128*128)
	for b.Loop() {
		if err := s.Load(0, c, g, true); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSet writes a prepared folder of n records of side size into dir,
// all in the train split, with the package's shard writer (content: a
// cheap pattern that differs between records), and returns its size in
// bytes.
func benchSet(b *testing.B, dir string, n, size int) int64 {
	b.Helper()
	w := newShardWriter(dir, SplitTrain, size)
	defer w.abort()
	rec := make([]byte, recordBytes(size))
	for i := range n {
		for j := range rec {
			rec[j] = byte(i*31 + j*7 + j>>8)
		}
		if err := w.write(rec); err != nil {
			b.Fatal(err)
		}
	}
	train, err := w.finish()
	if err != nil {
		b.Fatal(err)
	}
	if err := w.commit(); err != nil {
		b.Fatal(err)
	}
	m := &Manifest{
		Format: FormatName, Version: FormatVersion, ImageSize: size,
		RecordBytes: recordBytes(size), RecordsPerShard: recordsPerShard(size), Layout: recordLayout,
		Source: "synthetic", SourceFormat: FormatFolder, SplitRule: SplitShuffle,
		Splits:  map[string]SplitInfo{SplitTrain: train, SplitVal: {}, SplitTest: {}},
		Skipped: map[string]int{},
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := writeFileAtomic(filepath.Join(dir, ManifestFile), data); err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, sh := range train.Shards {
		total += sh.Bytes
	}
	return total
}

// BenchmarkOpenVerify measures Open's start-up cost on the train split of
// 28,000 images at 128×128 (28 shards, 1.84 GB; -short: 2,800): "first"
// is a new process's Open, which hashes every shard ("cold": with the
// shards dropped from the page cache first, where the platform allows;
// "warm": from the page cache; "warm-1proc": the same on one core), and
// "second" a later Open in the same process, which hashes none. MB/s is
// shard bytes per second of Open.
func BenchmarkOpenVerify(b *testing.B) {
	n := 28000
	if testing.Short() {
		n = 2800
	}
	dir := b.TempDir()
	total := benchSet(b, dir, n, 128)
	time.Sleep(racyWindow) // the shards' ctimes are old enough for verdicts to be kept
	m, err := ReadManifest(dir)
	if err != nil {
		b.Fatal(err)
	}
	var paths []string
	for _, sh := range m.Splits[SplitTrain].Shards {
		paths = append(paths, filepath.Join(dir, sh.File))
	}
	open := func(b *testing.B) {
		s, err := Open(dir, SplitTrain)
		if err != nil {
			b.Fatal(err)
		}
		if s.Len() != n {
			b.Fatalf("%d images, want %d", s.Len(), n)
		}
		s.Close()
	}
	forget := func() {
		verdicts.Lock()
		verdicts.m = nil
		verdicts.Unlock()
	}
	b.Run("first/cold", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			b.StopTimer()
			forget()
			if !dropPageCache(b, paths) {
				b.Skip("no way to drop files from the page cache here")
			}
			b.StartTimer()
			open(b)
		}
	})
	b.Run("first/warm", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			forget()
			open(b)
		}
	})
	b.Run("first/warm-1proc", func(b *testing.B) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		b.SetBytes(total)
		for b.Loop() {
			forget()
			open(b)
		}
	})
	b.Run("second", func(b *testing.B) {
		forget()
		open(b) // records the verdicts
		b.SetBytes(total)
		for b.Loop() {
			open(b)
		}
	})
}
