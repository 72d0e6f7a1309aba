package dataset

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"

	"github.com/tinct/tinct/internal/atomicfile"
)

// shardWriter appends records of one split to shard files written under
// temporary names in dir. commit renames them to their final names.
type shardWriter struct {
	dir, split string
	recBytes   int
	perShard   int

	f      *os.File
	bw     *bufio.Writer
	h      hash.Hash
	n      int // records in the current shard
	shards []ShardInfo
	temps  []string // temporary path of each shard in shards, then the open one
	count  int
}

func newShardWriter(dir, split string, size int) *shardWriter {
	return &shardWriter{dir: dir, split: split, recBytes: recordBytes(size), perShard: recordsPerShard(size)}
}

// write appends one record.
func (w *shardWriter) write(rec []byte) error {
	if len(rec) != w.recBytes {
		return fmt.Errorf("internal error: record of %d bytes, want %d", len(rec), w.recBytes)
	}
	if w.f != nil && w.n == w.perShard {
		if err := w.closeShard(); err != nil {
			return err
		}
	}
	if w.f == nil {
		name := fmt.Sprintf("%s-%05d.bin", w.split, len(w.shards))
		f, err := os.CreateTemp(w.dir, "."+name+".*.tmp")
		if err != nil {
			return fmt.Errorf("create shard %s: %w", filepath.Join(w.dir, name), err)
		}
		w.f, w.n, w.h = f, 0, sha256.New()
		w.temps = append(w.temps, f.Name())
		if w.bw == nil {
			w.bw = bufio.NewWriterSize(f, 1<<20)
		} else {
			w.bw.Reset(f)
		}
	}
	if _, err := w.bw.Write(rec); err != nil {
		return fmt.Errorf("write shard %s: %w (is the disk full?)", w.f.Name(), err)
	}
	w.h.Write(rec)
	w.n++
	w.count++
	return nil
}

// closeShard flushes, syncs and closes the open shard and records it.
func (w *shardWriter) closeShard() error {
	f := w.f
	w.f = nil
	err := w.bw.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write shard %s: %w (is the disk full?)", f.Name(), err)
	}
	w.shards = append(w.shards, ShardInfo{
		File:    fmt.Sprintf("%s-%05d.bin", w.split, len(w.shards)),
		Records: w.n,
		Bytes:   int64(w.n) * int64(w.recBytes),
		SHA256:  hex.EncodeToString(w.h.Sum(nil)),
	})
	return nil
}

// finish closes the open shard, if any, and returns the split's info.
func (w *shardWriter) finish() (SplitInfo, error) {
	if w.f != nil {
		if err := w.closeShard(); err != nil {
			return SplitInfo{}, err
		}
	}
	return SplitInfo{Count: w.count, Shards: append([]ShardInfo{}, w.shards...)}, nil
}

// commit renames the finished shards to their final names.
func (w *shardWriter) commit() error {
	for i, sh := range w.shards {
		if err := os.Rename(w.temps[i], filepath.Join(w.dir, sh.File)); err != nil {
			return fmt.Errorf("install shard %s: %w", sh.File, err)
		}
		w.temps[i] = ""
	}
	return nil
}

// abort closes and removes whatever temporary files remain.
func (w *shardWriter) abort() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	for _, t := range w.temps {
		if t != "" {
			os.Remove(t)
		}
	}
	w.temps = nil
}

// writeFileAtomic writes data to path through a synced temporary file in
// the same folder and a rename.
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.Write(path, data, "."+filepath.Base(path)+".tmp")
}

// syncDir makes renames inside dir durable where the platform supports it.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }
