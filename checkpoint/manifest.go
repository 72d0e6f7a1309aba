package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"time"
)

// This file holds what every store shares about a checkpoint's contents: the
// manifest format, and the checks a part must pass against it. The stores
// differ only in where the bytes live (files under <dir>/<name>/, objects
// under <prefix>/<name>/).

const (
	manifestFile  = "manifest.json"
	latestFile    = "latest"
	formatVersion = 1
)

// manifest is the JSON form of <name>/manifest.json.
type manifest struct {
	Version int            `json:"version"`
	Name    string         `json:"name"`
	Run     string         `json:"run,omitempty"` // absent in manifests of older tinct
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
	m := &manifest{Version: formatVersion, Name: c.Name, Run: c.Run, Step: c.Step, Epoch: c.Epoch, Time: c.Time.UTC()}
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

// encode returns the manifest as stored: indented JSON and a newline.
func (m *manifest) encode() ([]byte, error) {
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(js, '\n'), nil
}

func (m *manifest) info(name string) Info {
	in := Info{Name: name, Run: m.Run, Step: m.Step, Epoch: m.Epoch, Time: m.Time}
	for _, p := range m.Parts {
		in.Size += p.Size
	}
	return in
}

// header returns a checkpoint with m's header and no parts.
func (m *manifest) header(name string) *Checkpoint {
	return &Checkpoint{Name: name, Run: m.Run, Step: m.Step, Epoch: m.Epoch, Time: m.Time}
}

// errManifestMissing reports a checkpoint whose parts exist but whose
// manifest does not: a save that did not finish.
func errManifestMissing(name string) error {
	return &CorruptError{Name: name, File: manifestFile, Problem: "missing", Reason: "checkpoint incomplete, not written by a finished save"}
}

// decodeManifest parses and checks a manifest; name is the checkpoint's
// name in the store (its directory or key prefix), used in errors.
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
	var total int64 // Info.Size
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
		if p.Size > math.MaxInt64-total {
			return nil, corrupt(fmt.Sprintf("part sizes add up to more than %d bytes", int64(math.MaxInt64)), nil)
		}
		total += p.Size
		if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != sha256.Size {
			return nil, corrupt(fmt.Sprintf("part %s has malformed sha256 %q", p.Name, p.SHA256), nil)
		}
	}
	return &m, nil
}

// errPartMissing reports that part p of checkpoint name is gone; noun is
// what the store keeps parts in ("file", "object").
func errPartMissing(name string, p manifestPart, noun string) error {
	return &CorruptError{Name: name, File: p.Name, Problem: "missing", Reason: noun + " deleted"}
}

// checkPart checks part p of checkpoint name, stored as size bytes that r
// reads, against the manifest: first the size, then the SHA-256. With keep
// it returns the bytes; otherwise it streams them through the hash and
// returns nil. noun is what the store keeps parts in ("file", "object"),
// for the likely cause in errors. Read errors other than a short read are
// returned as they are (wrapped with where they happened), not as corrupt.
func checkPart(name string, p manifestPart, size int64, r io.Reader, keep bool, noun string) ([]byte, error) {
	corrupt := func(problem, reason string) error {
		return &CorruptError{Name: name, File: p.Name, Problem: problem, Reason: noun + " " + reason}
	}
	switch {
	case size < p.Size:
		return nil, corrupt(fmt.Sprintf("size %d bytes, manifest says %d", size, p.Size), "truncated")
	case size > p.Size:
		return nil, corrupt(fmt.Sprintf("size %d bytes, manifest says %d", size, p.Size), "corrupt")
	}
	h := sha256.New()
	var data []byte
	var err error
	if keep {
		data = make([]byte, p.Size)
		_, err = io.ReadFull(r, data)
		h.Write(data)
	} else {
		_, err = io.CopyN(h, r, p.Size)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, corrupt(fmt.Sprintf("shorter than the %d bytes the manifest says", p.Size), "truncated")
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %s: read: %w", name, p.Name, err)
	}
	if want, _ := hex.DecodeString(p.SHA256); !bytes.Equal(h.Sum(nil), want) {
		return nil, corrupt("sha256 mismatch", "corrupt")
	}
	return data, nil
}
