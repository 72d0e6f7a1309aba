package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// ContentHash identifies what a prepared set holds: the SHA-256 of the
// manifest's content fields (format, image size, record layout, and every
// split's shards with their record counts, sizes and SHA-256), as canonical
// JSON. Two folders with the same records have the same hash wherever they
// were prepared or copied to; the source path, seed, notes and skipped
// counts do not enter it. A cluster compares it between the coordinator and
// every worker before a worker computes anything.
func (m *Manifest) ContentHash() string {
	content := struct {
		Format          string               `json:"format"`
		Version         int                  `json:"version"`
		ImageSize       int                  `json:"image_size"`
		RecordBytes     int                  `json:"record_bytes"`
		RecordsPerShard int                  `json:"records_per_shard"`
		Layout          string               `json:"layout"`
		Splits          map[string]SplitInfo `json:"splits"`
	}{m.Format, m.Version, m.ImageSize, m.RecordBytes, m.RecordsPerShard, m.Layout, m.Splits}
	data, err := json.Marshal(content)
	if err != nil {
		panic(err) // plain strings, numbers and maps of them
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Dir returns the prepared folder the set was opened from.
func (s *Set) Dir() string { return s.dir }

// Identified is a training set that can say what it holds and where it
// was opened: a prepared *Set. Synthetic sets (tests) are not.
type Identified interface {
	Manifest() *Manifest
	Dir() string
}

var _ Identified = (*Set)(nil)
