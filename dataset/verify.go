package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

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
	n, err := io.Copy(dst, io.LimitReader(r, sh.Bytes+1))
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
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shard %s: %s is missing; %s", sh.File, path, fix)
	}
	if err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	defer f.Close()
	return verifyShard(f, nil, sh, path, fix)
}
