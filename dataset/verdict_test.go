package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// flipByte flips one byte in the middle of the file at path and sets its
// modification time to mtime (zero: leave the one the write gave it).
func flipByte(t *testing.T, path string, mtime time.Time) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// age sets the modification time of every shard of dir to an hour ago, as
// for a set prepared long before it is opened, and returns that time.
func age(t *testing.T, dir string) time.Time {
	t.Helper()
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	shards, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
	for _, p := range shards {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	return old
}

// wantDamaged checks that opening the train split of dir fails naming the
// damaged shard file and its checksum.
func wantDamaged(t *testing.T, dir, shard string) {
	t.Helper()
	s, err := Open(dir, SplitTrain)
	if err == nil {
		s.Close()
		t.Fatalf("Open of a set with a flipped byte in %s succeeded", shard)
	}
	for _, want := range []string{filepath.Join(dir, shard), "sha256", "run prepare again"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Open: %v\nwant it to contain %q", err, want)
		}
	}
}

func openClose(t *testing.T, dir string) {
	t.Helper()
	s, err := Open(dir, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestOpenVerifiesShards: a byte flipped in a shard makes Open fail, naming
// the file, whether or not the set was opened before.
func TestOpenVerifiesShards(t *testing.T) {
	withShardLimit(t, 2*4*32*32) // shards of two records
	const shard = "train-00001.bin"
	t.Run("never opened", func(t *testing.T) {
		dir, _ := prepareExact(t, 5)
		flipByte(t, filepath.Join(dir, shard), time.Time{})
		wantDamaged(t, dir, shard)
	})
	t.Run("opened before", func(t *testing.T) {
		dir, _ := prepareExact(t, 5)
		old := age(t, dir)
		openClose(t, dir)
		flipByte(t, filepath.Join(dir, shard), old.Add(time.Minute))
		wantDamaged(t, dir, shard)
	})
}

// TestOpenCachesVerdict: a shard verified once is not hashed again while its
// size and modification time are those it was verified with; the cache is
// in the set's folder.
func TestOpenCachesVerdict(t *testing.T) {
	withShardLimit(t, 2*4*32*32)
	const shard = "train-00001.bin"
	dir, _ := prepareExact(t, 5)
	old := age(t, dir)
	openClose(t, dir)
	if _, err := os.Stat(filepath.Join(dir, VerdictFile)); err != nil {
		t.Fatalf("no verdict cache after Open: %v", err)
	}
	// The same size and modification time: the cached verdict stands, so
	// the change goes unseen. That is the price of not re-hashing a 28k
	// image set at every start (Set.Verify always reads every byte).
	flipByte(t, filepath.Join(dir, shard), old)
	openClose(t, dir)
	s, err := Open(dir, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err == nil || !strings.Contains(err.Error(), shard) {
		t.Errorf("Verify: %v, want an error naming %s", err, shard)
	}
	s.Close()
	// A new modification time: hashed again.
	if err := os.Chtimes(filepath.Join(dir, shard), old.Add(time.Second), old.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	wantDamaged(t, dir, shard)
}

// TestOpenRacyVerdict: a verdict recorded while a shard's modification
// time is that recent is not trusted, since a write in the same tick of
// the file system's clock leaves the time unchanged.
func TestOpenRacyVerdict(t *testing.T) {
	const shard = "train-00000.bin"
	dir, _ := prepareExact(t, 3)
	path := filepath.Join(dir, shard)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	openClose(t, dir) // right after prepare: the shard is seconds old
	flipByte(t, path, st.ModTime())
	wantDamaged(t, dir, shard)
}

// TestOpenVerdictUnwritable: where the verdict cannot be saved, every Open
// verifies.
func TestOpenVerdictUnwritable(t *testing.T) {
	const shard = "train-00000.bin"
	dir, _ := prepareExact(t, 3)
	old := age(t, dir)
	// a folder in the cache's place: it can be neither read nor replaced
	// (a read-only folder does the same, but tests run as root here)
	if err := os.Mkdir(filepath.Join(dir, VerdictFile), 0o755); err != nil {
		t.Fatal(err)
	}
	openClose(t, dir)
	openClose(t, dir)
	flipByte(t, filepath.Join(dir, shard), old)
	wantDamaged(t, dir, shard)
}
