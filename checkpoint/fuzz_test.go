package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/internal/fuzzcheck"
)

// fuzzFixedPart is the content of part "b.bin" in FuzzLoadDir's checkpoint;
// part "a.bin" is the fuzzer's.
var fuzzFixedPart = []byte("fixed part\n")

// savedManifest saves c into a fresh directory store and returns the
// manifest.json it wrote.
func savedManifest(t *testing.T, c *Checkpoint) []byte {
	t.Helper()
	d := newDir(t)
	if err := d.Save(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(d.Path(), c.Name, manifestFile))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	full := savedManifest(t, ck("step-000000030", 30))
	empty := savedManifest(t, &Checkpoint{Name: "e", Time: t0, Parts: map[string][]byte{}})
	for name, data := range map[string][]byte{
		"saved":              full,
		"saved-no-parts":     empty,
		"truncated":          full[:len(full)/2],
		"future-version":     bytes.Replace(full, []byte(`"version": 1`), []byte(`"version": 2`), 1),
		"negative-size":      bytes.Replace(full, []byte(`"size": 4096`), []byte(`"size": -4096`), 1),
		"part-listed-twice":  bytes.Replace(full, []byte(`"ema.safetensors"`), []byte(`"config.yaml"`), 1),
		"escaping-part-name": bytes.Replace(full, []byte(`"ema.safetensors"`), []byte(`"../ema.safetensors"`), 1),
		"bad-sha256":         bytes.Replace(full, []byte(`"sha256": "`), []byte(`"sha256": "x`), 1),
		"sizes-overflow": []byte(`{"version":1,"name":"c","step":1,"epoch":0,"time":"2024-01-02T03:04:05Z","parts":[` +
			`{"name":"a","size":9223372036854775807,"sha256":"` + strings.Repeat("00", 32) + `"},` +
			`{"name":"b","size":9223372036854775807,"sha256":"` + strings.Repeat("00", 32) + `"}]}`),
	} {
		fuzzcheck.WriteSeed(t, "FuzzDecodeManifest", name, data)
	}

	part := []byte("the fuzzer's part\n")
	two := savedManifest(t, &Checkpoint{Name: "c", Step: 7, Epoch: 1, Time: t0, Parts: map[string][]byte{"a.bin": part, "b.bin": fuzzFixedPart}})
	fuzzcheck.WriteSeed(t, "FuzzLoadDir", "saved", two, part)
	fuzzcheck.WriteSeed(t, "FuzzLoadDir", "part-truncated", two, part[:5])
	fuzzcheck.WriteSeed(t, "FuzzLoadDir", "part-damaged", two, append([]byte{'T'}, part[1:]...))
	fuzzcheck.WriteSeed(t, "FuzzLoadDir", "huge-size", bytes.Replace(two, []byte(`"size": 18`), []byte(`"size": 1099511627776`), 1), part)
	fuzzcheck.WriteSeed(t, "FuzzLoadDir", "missing-part", bytes.Replace(two, []byte(`"a.bin"`), []byte(`"c.bin"`), 1), part)

	sum := sha256.Sum256(part)
	good := hex.EncodeToString(sum[:])
	fuzzcheck.WriteSeed(t, "FuzzCheckPart", "good", part, int64(len(part)), good, uint8(0), true)
	fuzzcheck.WriteSeed(t, "FuzzCheckPart", "good-streamed", part, int64(len(part)), strings.ToUpper(good), uint8(0), false)
	fuzzcheck.WriteSeed(t, "FuzzCheckPart", "shrank", part, int64(len(part)+9), good, uint8(9), true)
	fuzzcheck.WriteSeed(t, "FuzzCheckPart", "grew", part, int64(len(part)-1), good, uint8(0), true)
	fuzzcheck.WriteSeed(t, "FuzzCheckPart", "wrong-sha", part, int64(len(part)), strings.Repeat("ab", 32), uint8(0), true)
}

// manifestErr checks that decodeManifest's error is one of the two kinds
// it documents: corrupt, or a newer format.
func manifestErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) && !strings.Contains(err.Error(), "is newer than this build reads") {
		t.Fatalf("error neither corrupt nor a newer version: %v", err)
	}
}

// FuzzDecodeManifest decodes arbitrary bytes as a manifest.json. Errors
// must be corrupt-manifest errors (or a newer format); an accepted manifest
// must hold version 1, a non-negative step and epoch, valid, distinct part
// names, non-negative sizes whose total (Info.Size) does not overflow, and
// 32-byte hex SHA-256s; and encode → decode must give the same manifest.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"version":1,"time":"2024-01-02T03:04:05Z","parts":[]}`))
	f.Add([]byte(`{"version":1,"step":3,"epoch":1,"time":"2024-01-02T03:04:05+05:30","parts":[{"name":"a","size":0,"sha256":"` +
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" + `"}]}`))
	f.Add([]byte(`{"version":0}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"version":1,"parts":[{"name":"manifest.json","size":1,"sha256":""}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest("c", data)
		if err != nil {
			manifestErr(t, err)
			return
		}
		if m.Version != formatVersion || m.Step < 0 || m.Epoch < 0 {
			t.Fatalf("accepted version %d, step %d, epoch %d", m.Version, m.Step, m.Epoch)
		}
		seen := map[string]bool{}
		total := new(big.Int)
		for _, p := range m.Parts {
			if validatePartName(p.Name) != nil || seen[p.Name] || p.Size < 0 {
				t.Fatalf("accepted part %+v (seen before: %v)", p, seen[p.Name])
			}
			seen[p.Name] = true
			if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != sha256.Size {
				t.Fatalf("accepted sha256 %q", p.SHA256)
			}
			total.Add(total, big.NewInt(p.Size))
		}
		if in := m.info("c"); big.NewInt(in.Size).Cmp(total) != 0 {
			t.Fatalf("Info.Size %d, but the parts add up to %v", in.Size, total)
		}

		enc, err := m.encode()
		if err != nil {
			t.Fatalf("an accepted manifest does not encode: %v", err)
		}
		m2, err := decodeManifest("c", enc)
		if err != nil {
			t.Fatalf("an encoded manifest does not decode: %v\n%s", err, enc)
		}
		if !m2.Time.Equal(m.Time) {
			t.Fatalf("time %v became %v", m.Time, m2.Time)
		}
		a, b := *m, *m2
		a.Time, b.Time = time.Time{}, time.Time{}
		if len(a.Parts) == 0 && len(b.Parts) == 0 {
			a.Parts, b.Parts = nil, nil
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("encode → decode changed the manifest:\n%+v\n%+v", a, b)
		}
	})
}

// FuzzCheckPart checks a part's bytes against a manifest entry whose size
// and SHA-256 the fuzzer chooses; the file's size as stat reports it is
// the bytes' length plus extra (a file that shrank while it was read).
// checkPart must accept exactly the bytes that match both, return them
// unchanged (with keep), report anything else as corrupt, and allocate no
// more than the file holds, whatever the manifest claims.
func FuzzCheckPart(f *testing.F) {
	f.Add([]byte{}, int64(0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", uint8(0), true)
	f.Add([]byte("x"), int64(1<<40), "", uint8(0), true)
	f.Add([]byte("x"), int64(-1), "zz", uint8(1), false)
	f.Fuzz(func(t *testing.T, data []byte, declared int64, sum string, extra uint8, keep bool) {
		p := manifestPart{Name: "part.bin", Size: declared, SHA256: sum}
		size := int64(len(data)) + int64(extra)
		var (
			out []byte
			err error
		)
		n := fuzzcheck.AllocatedBytes(func() { out, err = checkPart("c", p, size, bytes.NewReader(data), keep, "file") })
		if limit := uint64(size) + 1<<20; n > limit {
			t.Fatalf("checking %d bytes (manifest: %d) allocated %d bytes", size, declared, n)
		}
		// As checkPart, compare what decodes of the hex: decodeManifest has
		// refused malformed ones before a part is checked.
		want, _ := hex.DecodeString(sum)
		got := sha256.Sum256(data)
		ok := extra == 0 && declared == int64(len(data)) && bytes.Equal(want, got[:])
		switch {
		case ok && err != nil:
			t.Fatalf("matching part refused: %v", err)
		case !ok && err == nil:
			t.Fatalf("part of %d bytes (stat %d) accepted against size %d, sha256 %q", len(data), size, declared, sum)
		case !ok && !errors.Is(err, ErrCorrupt):
			t.Fatalf("a mismatch that is not ErrCorrupt: %v", err)
		case ok && keep && !bytes.Equal(out, data):
			t.Fatal("checkPart changed the bytes")
		case !keep && out != nil:
			t.Fatal("bytes returned without keep")
		}
	})
}

// FuzzLoadDir loads checkpoint "c" from a directory store whose
// manifest.json is the fuzzer's, next to part files a.bin (the fuzzer's
// bytes) and b.bin (fixed). Load must succeed exactly when the manifest
// decodes and every part it lists exists with its size and SHA-256, then
// return those parts' bytes and the manifest's header; it must fail with
// ErrCorrupt otherwise (or a newer format), and allocate in proportion to
// what is on disk, not to the sizes the manifest claims.
func FuzzLoadDir(f *testing.F) {
	part := []byte("part a\n")
	sa, sb := sha256.Sum256(part), sha256.Sum256(fuzzFixedPart)
	f.Add([]byte(`{"version":1,"step":2,"time":"2024-01-02T03:04:05Z","parts":[{"name":"a.bin","size":7,"sha256":"`+hex.EncodeToString(sa[:])+
		`"},{"name":"b.bin","size":11,"sha256":"`+hex.EncodeToString(sb[:])+`"}]}`), part)
	f.Add([]byte(`{"version":1,"parts":[{"name":"a.bin","size":1000000000000,"sha256":"`+hex.EncodeToString(sa[:])+`"}]}`), part)
	f.Add([]byte(`{}`), []byte{})
	d, err := OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(d.Path(), "c")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.bin"), fuzzFixedPart, 0o644); err != nil {
		f.Fatal(err)
	}
	onDisk := map[string][]byte{"b.bin": fuzzFixedPart}
	f.Fuzz(func(t *testing.T, manifest, part []byte) {
		if err := os.WriteFile(filepath.Join(dir, manifestFile), manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "a.bin"), part, 0o644); err != nil {
			t.Fatal(err)
		}
		onDisk["a.bin"] = part
		var (
			c   *Checkpoint
			err error
		)
		n := fuzzcheck.AllocatedBytes(func() { c, err = d.Load(context.Background(), "c") })
		if limit := 16*uint64(len(manifest)+len(part)) + 1<<20; n > limit {
			t.Fatalf("Load allocated %d bytes for %d bytes on disk", n, len(manifest)+len(part)+len(fuzzFixedPart))
		}

		m, merr := decodeManifest("c", manifest)
		ok := merr == nil
		if ok {
			for _, p := range m.Parts {
				b, there := onDisk[p.Name]
				sum := sha256.Sum256(b)
				if !there || int64(len(b)) != p.Size || hex.EncodeToString(sum[:]) != strings.ToLower(p.SHA256) {
					ok = false
				}
			}
		}
		if !ok {
			if err == nil {
				t.Fatalf("Load accepted a checkpoint that does not check out (manifest error %v)", merr)
			}
			manifestErr(t, err)
			return
		}
		if err != nil {
			t.Fatalf("Load refused a checkpoint that checks out: %v", err)
		}
		if c.Name != "c" || c.Step != m.Step || c.Epoch != m.Epoch || !c.Time.Equal(m.Time) || len(c.Parts) != len(m.Parts) {
			t.Fatalf("Load returned %+v for manifest %+v", c, m)
		}
		for _, p := range m.Parts {
			if !bytes.Equal(c.Parts[p.Name], onDisk[p.Name]) {
				t.Fatalf("part %s differs from the file", p.Name)
			}
		}
	})
}
