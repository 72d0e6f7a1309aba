package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyFile(t *testing.T) {
	data := bytes.Repeat([]byte("tinct shard "), 100)
	sum := sha256.Sum256(data)
	sh := ShardInfo{File: "train-00000.bin", Records: 1, Bytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x01
	for _, tc := range []struct {
		name    string
		content []byte // nil: no file
		want    string // "" for no error
	}{
		{"intact", data, ""},
		{"flipped byte", flipped, "has sha256 "},
		{"truncated", data[:len(data)-1], "has 1199 bytes but the manifest says 1200 (truncated)"},
		{"empty", []byte{}, "has 0 bytes but the manifest says 1200"},
		{"grown", append(bytes.Clone(data), 0), "has more than the 1200 bytes the manifest says"},
		{"missing", nil, "is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), sh.File)
			if tc.content != nil {
				if err := os.WriteFile(path, tc.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := verifyFile(path, sh, "do this")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			// the error names the shard and the file, what is wrong and what to do
			for _, want := range []string{"shard " + sh.File + ": " + path, tc.want, "; do this"} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestVerifyShardCopies(t *testing.T) {
	data := []byte("some shard bytes")
	sum := sha256.Sum256(data)
	sh := ShardInfo{File: "val-00000.bin", Bytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	var copied bytes.Buffer
	if err := verifyShard(bytes.NewReader(data), &copied, sh, "object s3://b/p/val-00000.bin", "push again"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(copied.Bytes(), data) {
		t.Fatalf("copied %q, want %q", copied.Bytes(), data)
	}
	// a longer stream is read only one byte past the manifest's size
	copied.Reset()
	long := append(bytes.Clone(data), bytes.Repeat([]byte{0}, 1000)...)
	err := verifyShard(bytes.NewReader(long), &copied, sh, "object s3://b/p/val-00000.bin", "push again")
	if err == nil || !strings.Contains(err.Error(), "shard val-00000.bin: object s3://b/p/val-00000.bin has more than") || copied.Len() != len(data)+1 {
		t.Fatalf("long stream: %v, %d bytes copied", err, copied.Len())
	}
}
