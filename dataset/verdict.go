package dataset

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tinct/tinct/internal/atomicfile"
)

// Open verifies every shard's SHA-256 before training reads it, and keeps
// what it found in VerdictFile inside the prepared folder, so that a large
// set is hashed once rather than at every start. A verdict vouches for a
// shard only while the file has the size and modification time it was
// verified with, and only for the SHA-256 the manifest gives now.

// racyWindow is how recent a shard's modification time may be, relative to
// when it was verified, for the verdict to be trusted. File systems stamp
// writes with a coarse clock (a few milliseconds on Linux, 2 s on FAT), so
// a write soon after the check could leave the time the check saw; such a
// verdict is not trusted, and the shard is hashed again at the next Open,
// when its time is old enough (git's "racily clean" entries, the same way).
const racyWindow = 2 * time.Second

// verdict is one shard found to match the manifest.
type verdict struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	SHA256  string    `json:"sha256"`  // the manifest's, which the bytes matched
	Checked time.Time `json:"checked"` // when hashing began
}

// verdicts is VerdictFile: shard file name to verdict.
type verdicts struct {
	Shards map[string]verdict `json:"shards"`
}

// readVerdicts reads the cache in dir. A missing, unreadable or damaged
// cache is an empty one: it only ever saves work.
func readVerdicts(dir string) *verdicts {
	v := &verdicts{}
	if data, err := os.ReadFile(filepath.Join(dir, VerdictFile)); err == nil {
		json.Unmarshal(data, v)
	}
	if v.Shards == nil {
		v.Shards = map[string]verdict{}
	}
	return v
}

// trusts reports whether the cache vouches for shard sh whose file has the
// status st.
func (v *verdicts) trusts(sh ShardInfo, st os.FileInfo) bool {
	e, ok := v.Shards[sh.File]
	return ok && e.SHA256 == sh.SHA256 && e.Size == st.Size() && e.ModTime.Equal(st.ModTime()) &&
		e.ModTime.Before(e.Checked.Add(-racyWindow))
}

// save writes the cache into dir, keeping only the shards m lists. It
// fails where the folder is read-only; the caller ignores that, and every
// Open then verifies.
func (v *verdicts) save(dir string, m *Manifest) error {
	listed := map[string]bool{}
	for _, sh := range m.allShards() {
		listed[sh.File] = true
	}
	for name := range v.Shards {
		if !listed[name] {
			delete(v.Shards, name)
		}
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, VerdictFile), append(data, '\n'), "."+VerdictFile+".tmp-")
}

// verifyShards checks every shard of the set against the manifest's SHA-256,
// except those the cache vouches for; stats are the open files' statuses.
// The error names the first damaged file.
func (s *Set) verifyShards(stats []os.FileInfo) error {
	cache := readVerdicts(s.dir)
	changed := false
	for k, sh := range s.shards {
		if cache.trusts(sh, stats[k]) {
			continue
		}
		checked := time.Now()
		path := filepath.Join(s.dir, sh.File)
		if err := verifyShard(io.NewSectionReader(s.files[k], 0, sh.Bytes+1), nil, sh, path, "run prepare again"); err != nil {
			return err
		}
		cache.Shards[sh.File] = verdict{Size: stats[k].Size(), ModTime: stats[k].ModTime(), SHA256: sh.SHA256, Checked: checked}
		changed = true
	}
	if changed {
		cache.save(s.dir, s.man) // a read-only folder: verify again next time
	}
	return nil
}
