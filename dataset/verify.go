package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// copyBufs holds the buffers verifyShard reads through: reads of 1 MiB
// rather than io.Copy's 32 KiB, fewer system calls per shard.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// verifyShard reads r to its end (at most one byte past sh.Bytes), copying
// what it reads to w when w is not nil, and checks the size and SHA-256
// against the manifest's entry sh. where names the bytes read (a path, or
// "object s3://…") and fix says what to do when they do not match; both
// go into the error.
func verifyShard(r io.Reader, w io.Writer, sh ShardInfo, where, fix string) error {
	h := sha256.New()
	dst := io.Writer(h)
	if w != nil {
		dst = io.MultiWriter(w, h)
	}
	bp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(dst, io.LimitReader(r, sh.Bytes+1), *bp)
	copyBufs.Put(bp)
	if err != nil {
		return fmt.Errorf("shard %s: read %s: %w", sh.File, where, err)
	}
	if n != sh.Bytes {
		return shardSizeError(sh, where, n, fix)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sh.SHA256 {
		return fmt.Errorf("shard %s: %s has sha256 %s but the manifest says %s (damaged); %s", sh.File, where, got, sh.SHA256, fix)
	}
	return nil
}

// shardSizeError reports shard sh found with n bytes at where; n is
// sh.Bytes+1 when verifyShard stopped reading past the end.
func shardSizeError(sh ShardInfo, where string, n int64, fix string) error {
	if n > sh.Bytes {
		return fmt.Errorf("shard %s: %s has more than the %d bytes the manifest says (damaged or replaced); %s", sh.File, where, sh.Bytes, fix)
	}
	return fmt.Errorf("shard %s: %s has %d bytes but the manifest says %d (truncated); %s", sh.File, where, n, sh.Bytes, fix)
}

// verifyFile is verifyShard of the file at path.
func verifyFile(path string, sh ShardInfo, fix string) error {
	f, err := openShard(path, sh, fix)
	if err != nil {
		return err
	}
	defer f.Close()
	return verifyShard(f, nil, sh, path, fix)
}

// openShard opens the file at path, which should hold shard sh; the error
// says what to do (fix) when it is missing.
func openShard(path string, sh ShardInfo, fix string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("shard %s: %s is missing; %s", sh.File, path, fix)
	}
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", sh.File, err)
	}
	return f, nil
}
