package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"
)

const (
	manifestFile  = "manifest.json"
	formatVersion = 1
)

// manifest is the JSON form of <dir>/<name>/manifest.json.
type manifest struct {
	Version int            `json:"version"`
	Name    string         `json:"name"`
	Step    int64          `json:"step"`
	Epoch   int            `json:"epoch"`
	Time    time.Time      `json:"time"`
	Parts   []manifestPart `json:"parts"`
}

type manifestPart struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// newManifest describes c, its parts in name order.
func newManifest(c *Checkpoint, now time.Time) *manifest {
	m := &manifest{Version: formatVersion, Name: c.Name, Step: c.Step, Epoch: c.Epoch, Time: c.Time.UTC()}
	if c.Time.IsZero() {
		m.Time = now.UTC()
	}
	names := make([]string, 0, len(c.Parts))
	for name := range c.Parts {
		names = append(names, name)
	}
	sort.Strings(names)
	m.Parts = make([]manifestPart, 0, len(names))
	for _, name := range names {
		sum := sha256.Sum256(c.Parts[name])
		m.Parts = append(m.Parts, manifestPart{Name: name, Size: int64(len(c.Parts[name])), SHA256: hex.EncodeToString(sum[:])})
	}
	return m
}

func (m *manifest) info(name string) Info {
	in := Info{Name: name, Step: m.Step, Epoch: m.Epoch, Time: m.Time}
	for _, p := range m.Parts {
		in.Size += p.Size
	}
	return in
}

// readManifest reads and checks the manifest of checkpoint name in root.
func readManifest(root *os.Root, name string) (*manifest, error) {
	data, err := root.ReadFile(manifestFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &CorruptError{Name: name, File: manifestFile, Problem: "missing", Reason: "checkpoint incomplete, not written by a finished save"}
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: read %s: %w", name, manifestFile, err)
	}
	return decodeManifest(name, data)
}

// decodeManifest parses and checks a manifest; name is the checkpoint's
// directory name, used in errors.
func decodeManifest(name string, data []byte) (*manifest, error) {
	corrupt := func(problem string, err error) error {
		return &CorruptError{Name: name, File: manifestFile, Problem: problem, Reason: "manifest unreadable", Err: err}
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, corrupt("invalid JSON", err)
	}
	switch {
	case m.Version > formatVersion:
		return nil, fmt.Errorf("checkpoint %s: %s: format version %d is newer than this build reads (%d); upgrade tinct to load it",
			name, manifestFile, m.Version, formatVersion)
	case m.Version < 1:
		return nil, corrupt(fmt.Sprintf("format version %d is not valid", m.Version), nil)
	case m.Step < 0 || m.Epoch < 0:
		return nil, corrupt(fmt.Sprintf("negative step (%d) or epoch (%d)", m.Step, m.Epoch), nil)
	}
	seen := make(map[string]bool, len(m.Parts))
	for _, p := range m.Parts {
		if err := validatePartName(p.Name); err != nil {
			return nil, corrupt("bad part entry", err)
		}
		if seen[p.Name] {
			return nil, corrupt(fmt.Sprintf("part %s listed twice", p.Name), nil)
		}
		seen[p.Name] = true
		if p.Size < 0 {
			return nil, corrupt(fmt.Sprintf("part %s has negative size %d", p.Name, p.Size), nil)
		}
		if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != sha256.Size {
			return nil, corrupt(fmt.Sprintf("part %s has malformed sha256 %q", p.Name, p.SHA256), nil)
		}
	}
	return &m, nil
}

// readPart opens part p of checkpoint name in root and checks its size and
// SHA-256. With keep it returns the bytes; otherwise it streams them through
// the hash and returns nil.
func readPart(root *os.Root, name string, p manifestPart, keep bool) ([]byte, error) {
	corrupt := func(problem, reason string) error {
		return &CorruptError{Name: name, File: p.Name, Problem: problem, Reason: reason}
	}
	f, err := root.Open(p.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, corrupt("missing", "file deleted")
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %s: %w", name, p.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %s: %w", name, p.Name, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, corrupt("not a regular file", "replaced by hand")
	case fi.Size() < p.Size:
		return nil, corrupt(fmt.Sprintf("size %d bytes, manifest says %d", fi.Size(), p.Size), "file truncated")
	case fi.Size() > p.Size:
		return nil, corrupt(fmt.Sprintf("size %d bytes, manifest says %d", fi.Size(), p.Size), "file corrupt")
	}
	h := sha256.New()
	var data []byte
	if keep {
		data = make([]byte, p.Size)
		_, err = io.ReadFull(f, data)
		h.Write(data)
	} else {
		_, err = io.CopyN(h, f, p.Size)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, corrupt(fmt.Sprintf("shorter than the %d bytes the manifest says", p.Size), "file truncated")
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %s: read: %w", name, p.Name, err)
	}
	if want, _ := hex.DecodeString(p.SHA256); !bytes.Equal(h.Sum(nil), want) {
		return nil, corrupt("sha256 mismatch", "file corrupt")
	}
	return data, nil
}
