package dataset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

const (
	// ManifestFile is the name of the manifest inside a prepared folder.
	ManifestFile = "manifest.json"
	// FormatName identifies a prepared folder's manifest.
	FormatName = "tinct-dataset"
	// FormatVersion is the version of the on-disk format this package
	// writes and reads.
	FormatVersion = 1
	// MaxShardBytes bounds the size of one shard file.
	MaxShardBytes = 64 << 20
	// MaxImageSize is the largest image side Prepare accepts.
	MaxImageSize = 2048
)

// Split names.
const (
	SplitTrain = "train"
	SplitVal   = "val"
	SplitTest  = "test"
)

// Splits lists the split names in manifest order.
var Splits = []string{SplitTrain, SplitVal, SplitTest}

// shardName matches the shard files this package writes.
var shardName = regexp.MustCompile(`^(train|val|test)-[0-9]{5}\.bin$`)

// Manifest describes a prepared folder. It is stored as manifest.json.
type Manifest struct {
	Format          string               `json:"format"`  // always FormatName
	Version         int                  `json:"version"` // FormatVersion
	ImageSize       int                  `json:"image_size"`
	RecordBytes     int                  `json:"record_bytes"`      // 4·S·S
	RecordsPerShard int                  `json:"records_per_shard"` // every shard but a split's last holds this many
	Layout          string               `json:"layout"`            // human-readable record layout
	Source          string               `json:"source"`
	SourceFormat    string               `json:"source_format"` // folder, celebahq or gray128
	SplitRule       string               `json:"split_rule"`    // SplitByFileName or SplitShuffle
	Seed            uint64               `json:"seed"`
	Crops           int                  `json:"crops,omitempty"` // training crops per photo (PrepareOptions.Crops); 0 or 1: the center square
	Splits          map[string]SplitInfo `json:"splits"`
	Skipped         map[string]int       `json:"skipped"`
	Notes           []string             `json:"notes,omitempty"`
}

// SplitInfo lists one split's shards.
type SplitInfo struct {
	Count  int         `json:"count"`
	Shards []ShardInfo `json:"shards"`
}

// ShardInfo describes one shard file.
type ShardInfo struct {
	File    string `json:"file"` // base name inside the prepared folder
	Records int    `json:"records"`
	Bytes   int64  `json:"bytes"`
	SHA256  string `json:"sha256"` // lowercase hex
}

// recordLayout is the Layout text of version 1.
const recordLayout = "uint8 color RGB in CHW order (3*S*S bytes), then uint8 gray (S*S bytes); values 0..255"

// recordBytes is the size of one record for images of side size.
func recordBytes(size int) int { return 4 * size * size }

// shardLimit is MaxShardBytes; tests lower it to get many small shards.
var shardLimit = MaxShardBytes

// recordsPerShard is how many records of side size fit in one shard.
func recordsPerShard(size int) int { return max(1, shardLimit/recordBytes(size)) }

// ReadManifest reads and validates the manifest of the prepared folder dir.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s has no %s: it is not a prepared dataset, or its prepare did not finish; run `tinct prepare` into it", dir, ManifestFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read dataset manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w; the file is damaged, run prepare again", path, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

// validate checks the manifest's internal consistency.
func (m *Manifest) validate() error {
	if m.Format != FormatName {
		return fmt.Errorf("format is %q, want %q: not a tinct dataset manifest", m.Format, FormatName)
	}
	if m.Version != FormatVersion {
		return fmt.Errorf("format version %d is not supported (this tinct reads version %d); run prepare again with this tinct", m.Version, FormatVersion)
	}
	if m.ImageSize < 1 || m.ImageSize > MaxImageSize {
		return fmt.Errorf("image size %d out of range 1..%d", m.ImageSize, MaxImageSize)
	}
	if m.RecordBytes != recordBytes(m.ImageSize) {
		return fmt.Errorf("record size %d does not match image size %d (want %d)", m.RecordBytes, m.ImageSize, recordBytes(m.ImageSize))
	}
	if m.RecordsPerShard < 1 {
		return fmt.Errorf("records per shard %d must be positive", m.RecordsPerShard)
	}
	// A shard holds at most MaxShardBytes (or one record), which also keeps
	// records × record_bytes below overflow in the checks that follow.
	if limit := max(1, MaxShardBytes/m.RecordBytes); m.RecordsPerShard > limit {
		return fmt.Errorf("records per shard %d: more than the %d records of %d bytes that fit in a %d MiB shard", m.RecordsPerShard, limit, m.RecordBytes, MaxShardBytes>>20)
	}
	for name, sp := range m.Splits {
		if name != SplitTrain && name != SplitVal && name != SplitTest {
			return fmt.Errorf("unknown split %q", name)
		}
		total := 0
		for i, sh := range sp.Shards {
			if sh.File == "" || filepath.Base(sh.File) != sh.File || strings.ContainsAny(sh.File, `/\`) || sh.File == "." || sh.File == ".." {
				return fmt.Errorf("split %s: shard file name %q must be a plain file name", name, sh.File)
			}
			if want := fmt.Sprintf("%s-%05d.bin", name, i); sh.File != want {
				return fmt.Errorf("split %s: shard %d is named %q, want %q", name, i, sh.File, want)
			}
			if sh.Records < 1 || sh.Records > m.RecordsPerShard || (i < len(sp.Shards)-1 && sh.Records != m.RecordsPerShard) {
				return fmt.Errorf("split %s: shard %s holds %d records, inconsistent with %d per shard", name, sh.File, sh.Records, m.RecordsPerShard)
			}
			if sh.Bytes != int64(sh.Records)*int64(m.RecordBytes) {
				return fmt.Errorf("split %s: shard %s is listed as %d bytes, want %d records × %d bytes", name, sh.File, sh.Bytes, sh.Records, m.RecordBytes)
			}
			total += sh.Records
		}
		if total != sp.Count {
			return fmt.Errorf("split %s: count %d but its shards hold %d records", name, sp.Count, total)
		}
	}
	return nil
}
