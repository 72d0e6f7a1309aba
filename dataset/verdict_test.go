package dataset

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// flipByte flips one byte in the middle of the file at path, in place,
// and sets its modification time to mtime (zero: leave the one the write
// gave it).
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

// asAnotherProcess forgets the verdicts this process recorded, as a new
// process starts without them.
func asAnotherProcess(t *testing.T) {
	t.Helper()
	verdicts.Lock()
	verdicts.m = nil
	verdicts.Unlock()
}

// fastRacy lowers racyWindow for the test, so that a verdict is kept on a
// shard whose status changed a settle ago rather than two seconds, and
// starts the test as a new process would.
func fastRacy(t *testing.T) {
	t.Helper()
	old := racyWindow
	racyWindow = 20 * time.Millisecond // ≥ the file system clock's tick (ext4, tmpfs: ≤ 10 ms)
	t.Cleanup(func() { racyWindow = old })
	asAnotherProcess(t)
}

// settle waits out racyWindow: a file whose status changed before settle
// is old enough, at the Open after it, for its verdict to be kept.
func settle() { time.Sleep(racyWindow + 10*time.Millisecond) }

// wantVerdicts skips the test where this platform keeps no verdicts.
func wantVerdicts(t *testing.T, dir string) {
	t.Helper()
	st, err := os.Stat(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := fileKey(st); !ok {
		t.Skipf("%s/%s keeps no verdicts: every Open hashes every shard", runtime.GOOS, runtime.GOARCH)
	}
}

// hashLog records the shard files hashed while a test runs.
type hashLog struct {
	mu    sync.Mutex
	files []string
}

// logHashes makes hashHook record, for the rest of the test, the base
// name of every shard file read to be hashed.
func logHashes(t *testing.T) *hashLog {
	t.Helper()
	l := &hashLog{}
	hashHook = func(path string, done bool) {
		if !done {
			l.mu.Lock()
			l.files = append(l.files, filepath.Base(path))
			l.mu.Unlock()
		}
	}
	t.Cleanup(func() { hashHook = nil })
	return l
}

// take returns, sorted, the files hashed since the last take.
func (l *hashLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.files
	l.files = nil
	slices.Sort(f)
	return f
}

// wantHashed checks that the files hashed since the last take are want.
func (l *hashLog) wantHashed(t *testing.T, what string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := l.take(); !slices.Equal(got, want) {
		t.Errorf("%s hashed %q, want %q", what, got, want)
	}
}

// shardFiles lists the shard files of the train split of dir.
func shardFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sh := range m.Splits[SplitTrain].Shards {
		names = append(names, sh.File)
	}
	return names
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

// TestOpenNewProcessSeesFlippedByte: a byte flipped with the shard's size
// and modification time kept (bit rot, or an edit with the time put back)
// after the set was opened and verified is caught by the next process that
// opens it. A verdict is not kept on disk: only the process that verified
// a file trusts it.
func TestOpenNewProcessSeesFlippedByte(t *testing.T) {
	withShardLimit(t, 2*4*32*32)
	fastRacy(t)
	const shard = "train-00001.bin"
	dir, _ := prepareExact(t, 5)
	wantVerdicts(t, dir)
	old := age(t, dir)
	settle()
	log := logHashes(t)
	openClose(t, dir)
	log.wantHashed(t, "first Open", shardFiles(t, dir)...)
	openClose(t, dir)
	log.wantHashed(t, "second Open in the same process") // the verdicts were kept

	path := filepath.Join(dir, shard)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, path, old)
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("the flip changed size or mtime: %d %v, was %d %v", after.Size(), after.ModTime(), before.Size(), before.ModTime())
	}
	asAnotherProcess(t)
	wantDamaged(t, dir, shard)
}

// oldVerdicts is verified.json as versions before this one wrote it.
type oldVerdicts struct {
	Shards map[string]oldVerdict `json:"shards"`
}

type oldVerdict struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	SHA256  string    `json:"sha256"`
	Checked time.Time `json:"checked"`
}

// writeOldVerdicts writes verified.json into dir vouching for every shard
// as it is now, as an older version's Open left it.
func writeOldVerdicts(t *testing.T, dir string) {
	t.Helper()
	m, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := oldVerdicts{Shards: map[string]oldVerdict{}}
	for _, sh := range m.allShards() {
		st, err := os.Stat(filepath.Join(dir, sh.File))
		if err != nil {
			t.Fatal(err)
		}
		v.Shards[sh.File] = oldVerdict{Size: st.Size(), ModTime: st.ModTime(), SHA256: sh.SHA256, Checked: time.Now()}
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "verified.json", data)
}

// copyPreserving copies the flat folder src to dst keeping every file's
// mode and modification time, as cp -a and rsync -a do.
func copyPreserving(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		st, err := os.Stat(from)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(to, st.ModTime(), st.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenCopiedFolder: a prepared folder copied with its times and the
// verified.json an older version left in it (cp -a, rsync -a), then
// damaged with the modification time kept, is caught; Open trusts no file
// on disk for its verdicts.
func TestOpenCopiedFolder(t *testing.T) {
	withShardLimit(t, 2*4*32*32)
	fastRacy(t)
	const shard = "train-00001.bin"
	dir, _ := prepareExact(t, 5)
	old := age(t, dir)
	settle()
	openClose(t, dir)
	writeOldVerdicts(t, dir)
	openClose(t, dir)

	cp := t.TempDir()
	copyPreserving(t, dir, cp)
	flipByte(t, filepath.Join(cp, shard), old)
	wantDamaged(t, cp, shard)
	openClose(t, dir) // the original is sound
}

// TestOpenLeavesFolderAlone: Open writes nothing into the prepared folder
// (no verified.json), so it works the same in a read-only folder and a
// copy carries nothing that vouches for its shards.
func TestOpenLeavesFolderAlone(t *testing.T) {
	dir, _ := prepareExact(t, 3)
	age(t, dir)
	list := func() []string {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	before := list()
	openClose(t, dir)
	openClose(t, dir)
	if after := list(); !slices.Equal(after, before) {
		t.Errorf("the folder held %q before Open, %q after", before, after)
	}
}

// TestOpenCachesVerdictInProcess: within one process, a second Open does
// not hash a shard again while it is the same file (device, inode) with
// the same size, modification and status-change times; a shard whose
// ctime moved (a chmod, or a rewrite with the same bytes and the old
// modification time) is hashed again, and one damaged with its size and
// modification time kept is caught without waiting for another process.
func TestOpenCachesVerdictInProcess(t *testing.T) {
	withShardLimit(t, 2*4*32*32)
	fastRacy(t)
	dir, _ := prepareExact(t, 5) // train-00000 … train-00002
	wantVerdicts(t, dir)
	old := age(t, dir)
	settle()
	log := logHashes(t)
	openClose(t, dir)
	log.wantHashed(t, "first Open", shardFiles(t, dir)...)
	openClose(t, dir)
	log.wantHashed(t, "second Open of unchanged shards")

	chmodded := filepath.Join(dir, "train-00000.bin")
	if err := os.Chmod(chmodded, 0o600); err != nil {
		t.Fatal(err)
	}
	settle()
	openClose(t, dir)
	log.wantHashed(t, "Open after a chmod", "train-00000.bin")
	openClose(t, dir)
	log.wantHashed(t, "Open after the chmodded shard was verified again")

	rewritten := filepath.Join(dir, "train-00002.bin")
	data, err := os.ReadFile(rewritten)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rewritten, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(rewritten, old, old); err != nil {
		t.Fatal(err)
	}
	settle()
	openClose(t, dir)
	log.wantHashed(t, "Open after a rewrite with the same bytes and mtime", "train-00002.bin")

	flipByte(t, filepath.Join(dir, "train-00001.bin"), old)
	wantDamaged(t, dir, "train-00001.bin")
}

// TestOpenRacyVerdict: a verdict is not kept on a shard whose status
// changed within racyWindow of the check, since a change in the same tick
// of the file system's clock leaves the ctime unchanged: the next Open
// hashes it again.
func TestOpenRacyVerdict(t *testing.T) {
	fastRacy(t)
	racyWindow = time.Hour // every shard of a set prepared just now is racy
	dir, _ := prepareExact(t, 3)
	log := logHashes(t)
	openClose(t, dir)
	log.wantHashed(t, "first Open", shardFiles(t, dir)...)
	openClose(t, dir)
	log.wantHashed(t, "second Open of racily verified shards", shardFiles(t, dir)...)
}

// TestOpenParallelLowestDamaged: Open hashes shards at once, and with
// several damaged reports the one of the lowest index even when a later
// one is found first.
func TestOpenParallelLowestDamaged(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	withShardLimit(t, 4*32*32) // one record per shard
	fastRacy(t)
	dir, _ := prepareExact(t, 8)
	const first, later = "train-00002.bin", "train-00005.bin"
	flipByte(t, filepath.Join(dir, first), time.Time{})
	flipByte(t, filepath.Join(dir, later), time.Time{})

	// The first damaged shard is hashed only once the later one was found
	// damaged: Open must hash them at once, and still report the first.
	laterDone := make(chan struct{})
	var (
		mu      sync.Mutex
		waited  bool
		timeout bool
	)
	hashHook = func(path string, done bool) {
		switch {
		case done && filepath.Base(path) == later:
			close(laterDone)
		case !done && filepath.Base(path) == first:
			select {
			case <-laterDone:
			case <-time.After(10 * time.Second): // a guard against a hang, not a timing
				mu.Lock()
				timeout = true
				mu.Unlock()
			}
			mu.Lock()
			waited = true
			mu.Unlock()
		}
	}
	t.Cleanup(func() { hashHook = nil })
	wantDamaged(t, dir, first)
	hashHook = nil
	if !waited {
		t.Fatalf("%s was not hashed", first)
	}
	if timeout {
		t.Errorf("%s was not hashed while %s was: Open hashes one shard at a time", later, first)
	}

	// And without the hook, again and again.
	for range 20 {
		wantDamaged(t, dir, first)
	}
}

// TestFetchThenOpenHashesOnce: Open does not read again the shards that
// Fetch, in the same process, has just downloaded and checked, nor those it
// found sound in its cache; a new process hashes the cached shards once.
func TestFetchThenOpenHashesOnce(t *testing.T) {
	_, url, opt := remoteFixture(t)
	local := smallPrepared(t)
	fastRacy(t)
	ctx := context.Background()
	if err := Upload(ctx, local, url, opt); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	log := logHashes(t)
	st, err := Fetch(ctx, url, cache, opt)
	if err != nil {
		t.Fatal(err)
	}
	wantVerdicts(t, st.Dir)
	m, err := ReadManifest(local)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, sh := range m.allShards() {
		all = append(all, sh.File)
	}
	if st.Downloaded != len(all) {
		t.Fatalf("first fetch: %+v, want all %d shards downloaded", st, len(all))
	}
	log.take()
	openAll := func(what string) {
		t.Helper()
		for _, split := range Splits {
			s, err := Open(st.Dir, split)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
		log.wantHashed(t, what)
	}
	openAll("Open after the fetch that downloaded every shard")

	asAnotherProcess(t)
	settle()
	if _, err := Fetch(ctx, url, cache, opt); err != nil {
		t.Fatal(err)
	}
	log.wantHashed(t, "a new process's fetch over a full cache", all...)
	openAll("Open after the fetch that verified the cached shards")
	if _, err := Fetch(ctx, url, cache, opt); err != nil {
		t.Fatal(err)
	}
	log.wantHashed(t, "a second fetch in the same process")
}
