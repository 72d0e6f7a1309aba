package dataset

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Open verifies every shard's SHA-256 by reading its bytes. The only
// verdict it trusts without reading is one this same process recorded, in
// memory, on this same file: the file is identified by its device and
// inode number, and the verdict holds only while the file's size,
// modification time and status-change time (ctime) are those it was
// verified with, and only for the SHA-256 the manifest gives now. Nothing
// is kept on disk: a folder copied with its times (cp -a, rsync -a), a byte
// flipped by bit rot, or a shard edited with its modification time put
// back is caught by the next process that opens the set. (Older versions
// kept verdicts in verified.json in the prepared folder; such a file is
// ignored.) Where the platform gives no inode and ctime (see fileKey), no
// verdict is kept and every Open reads every shard.

// racyWindow is how recent a shard's status-change time may be, relative
// to when its status was read for verification, for the verdict to be
// kept. File systems stamp changes with a coarse clock (a tick of a few
// milliseconds on Linux, a second or two on some file systems), so a
// change in the same tick as the check would leave the ctime the check
// saw; such a shard is not recorded and is hashed again at the next Open
// (git's "racily clean" entries, the same way). Tests lower it.
var racyWindow = 2 * time.Second

// fileID identifies a file: its device and inode number.
type fileID struct{ dev, ino uint64 }

// fileStamp is what changes when a file's content does: any write, or a
// replacement under the same inode, moves the ctime, which, unlike the
// modification time, no program can set back.
type fileStamp struct {
	size         int64
	mtime, ctime int64 // nanoseconds since the Unix epoch
}

// verdict is one file found to match a manifest's SHA-256 while it had
// stamp.
type verdict struct {
	stamp  fileStamp
	sha256 string
}

// verdicts holds the verdicts of this process, one per file (the latest).
var verdicts struct {
	sync.Mutex
	m map[fileID]verdict
}

// hashHook, when not nil, is called with the path of each shard file that
// Open, Verify or Fetch reads to hash, before (done false) and after (done
// true): a test hook.
var hashHook func(path string, done bool)

// hashing calls hashHook, if any, as the file at path is hashed, and
// returns what to call when it is done.
func hashing(path string) func() {
	if hashHook == nil {
		return func() {}
	}
	hashHook(path, false)
	return func() { hashHook(path, true) }
}

// vouched reports whether this process verified the file whose status is
// st against sh.SHA256, and it has not changed since.
func vouched(st os.FileInfo, sh ShardInfo) bool {
	id, stamp, ok := fileKey(st)
	if !ok {
		return false
	}
	verdicts.Lock()
	defer verdicts.Unlock()
	v, ok := verdicts.m[id]
	return ok && v.stamp == stamp && v.sha256 == sh.SHA256
}

// vouch records that the file whose status st was read at statted (or
// later) matched sh.SHA256 when read after that. It records nothing when
// the file's ctime is within racyWindow of statted; a zero statted skips
// that check, for a file this process has just written and checked as it
// wrote.
func vouch(st os.FileInfo, sh ShardInfo, statted time.Time) {
	id, stamp, ok := fileKey(st)
	if !ok {
		return
	}
	if !statted.IsZero() && stamp.ctime >= statted.Add(-racyWindow).UnixNano() {
		return
	}
	verdicts.Lock()
	defer verdicts.Unlock()
	if verdicts.m == nil {
		verdicts.m = map[fileID]verdict{}
	}
	verdicts.m[id] = verdict{stamp: stamp, sha256: sh.SHA256}
}

// hashShards verifies shard k of shards (whose file is files[k], named
// paths[k]) for each k with need[k], on up to GOMAXPROCS goroutines, and
// calls ok(k) for each that matched. The error is that of the damaged (or
// unreadable) shard of the lowest index, as when verifying in order: a
// shard after a damaged one may be left unread.
func hashShards(shards []ShardInfo, files []*os.File, paths []string, need []bool, fix string, ok func(k int)) error {
	todo := make([]int, 0, len(shards))
	for k := range shards {
		if need[k] {
			todo = append(todo, k)
		}
	}
	errs := make([]error, len(shards))
	var (
		next atomic.Int64 // index into todo of the next shard to hash
		bad  atomic.Int64 // lowest index of a damaged shard so far
		wg   sync.WaitGroup
	)
	bad.Store(int64(len(shards)))
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(todo) {
					return
				}
				k := todo[i]
				if int64(k) > bad.Load() {
					continue // cannot be the error reported
				}
				sh := shards[k]
				done := hashing(paths[k])
				err := verifyShard(io.NewSectionReader(files[k], 0, sh.Bytes+1), nil, sh, paths[k], fix)
				done()
				if err != nil {
					errs[k] = err
					for {
						b := bad.Load()
						if int64(k) >= b || bad.CompareAndSwap(b, int64(k)) {
							break
						}
					}
					continue
				}
				ok(k)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// verifyShards checks every shard of the set against the manifest's
// SHA-256, except those this process verified before and that have not
// changed since (vouched); stats are the open files' statuses, read at
// statted or later. The error names the damaged file of the lowest index.
func (s *Set) verifyShards(stats []os.FileInfo, statted time.Time) error {
	need := make([]bool, len(s.shards))
	paths := make([]string, len(s.shards))
	for k, sh := range s.shards {
		paths[k] = filepath.Join(s.dir, sh.File)
		need[k] = !vouched(stats[k], sh)
	}
	return hashShards(s.shards, s.files, paths, need, "run prepare again", func(k int) {
		vouch(stats[k], s.shards[k], statted)
	})
}

// verifyFileOnce is verifyFile, except that a file this process verified
// before and that has not changed since is not read again, and a file
// found sound is recorded as such (vouch).
func verifyFileOnce(path string, sh ShardInfo, fix string) error {
	statted := time.Now()
	f, err := openShard(path, sh, fix)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err == nil && vouched(st, sh) {
		return nil
	}
	done := hashing(path)
	err = verifyShard(f, nil, sh, path, fix)
	done()
	if err != nil {
		return err
	}
	if st != nil {
		vouch(st, sh, statted)
	}
	return nil
}
