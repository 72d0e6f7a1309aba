package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tinct/tinct/internal/fuzzcheck"
)

// writeRecords writes records (whole records of side size; a partial tail
// is dropped) as split "train" of a prepared folder in dir with perShard
// records per shard, through the package's own shard writer and manifest
// encoding, and returns the manifest.
func writeRecords(t testing.TB, dir string, size, perShard int, records []byte) *Manifest {
	t.Helper()
	m := &Manifest{
		Format: FormatName, Version: FormatVersion, ImageSize: size, RecordBytes: recordBytes(size), RecordsPerShard: perShard,
		Layout: recordLayout, Source: "fuzz", SourceFormat: "folder", SplitRule: SplitShuffle, Seed: 1,
		Splits: map[string]SplitInfo{}, Skipped: map[string]int{},
	}
	for _, split := range Splits {
		w := &shardWriter{dir: dir, split: split, recBytes: m.RecordBytes, perShard: perShard}
		if split == SplitTrain {
			for rec := records; len(rec) >= m.RecordBytes; rec = rec[m.RecordBytes:] {
				if err := w.write(rec[:m.RecordBytes]); err != nil {
					t.Fatal(err)
				}
			}
		}
		info, err := w.finish()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.commit(); err != nil {
			t.Fatal(err)
		}
		m.Splits[split] = info
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(filepath.Join(dir, ManifestFile), append(data, '\n')); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFuzzSeeds writes the seed corpora of this package's fuzz targets
// (with TINCT_FUZZ_SEEDS=write; skipped otherwise).
func TestFuzzSeeds(t *testing.T) {
	fuzzcheck.WriteSeeds(t)
	withShardLimit(t, 2*recordBytes(16))
	src := t.TempDir()
	for k := range 7 {
		writeFile(t, src, fmt.Sprintf("img%02d.png", k), encodePNG(t, pattern(40+k, 36+2*k, k)))
	}
	out := t.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 16, Val: 1, Test: 1, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	prepared, err := os.ReadFile(filepath.Join(out, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	prepared = bytes.ReplaceAll(prepared, []byte(src), []byte("/data/photos"))
	edit := func(f func(*Manifest)) []byte {
		var m Manifest
		if err := json.Unmarshal(prepared, &m); err != nil {
			t.Fatal(err)
		}
		f(&m)
		b, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, data := range map[string][]byte{
		"prepared":           prepared,
		"prepared-truncated": prepared[:len(prepared)/3],
		"wrong-count":        edit(func(m *Manifest) { sp := m.Splits[SplitTrain]; sp.Count++; m.Splits[SplitTrain] = sp }),
		"escaping-shard":     edit(func(m *Manifest) { m.Splits[SplitVal].Shards[0].File = "../val-00000.bin" }),
		"shard-named-manifest": edit(func(m *Manifest) {
			m.Splits[SplitVal].Shards[0].File = ManifestFile
		}),
		"shard-listed-twice": edit(func(m *Manifest) { m.Splits[SplitTest].Shards[0].File = m.Splits[SplitVal].Shards[0].File }),
		// Records × record_bytes wraps around int64 to 4 bytes, so a 4-byte
		// shard would pass as 2^62+1 images (and Permutation would try to
		// allocate them all).
		"records-overflow": []byte(`{"format":"tinct-dataset","version":1,"image_size":1,"record_bytes":4,"records_per_shard":4611686018427387905,` +
			`"splits":{"train":{"count":4611686018427387905,"shards":[{"file":"train-00000.bin","records":4611686018427387905,"bytes":4,"sha256":""}]}}}`),
	} {
		fuzzcheck.WriteSeed(t, "FuzzManifest", name, data)
	}

	rec := func(size, n int) []byte {
		b := make([]byte, n*recordBytes(size))
		for i := range b {
			b[i] = byte(i*7 + i/13)
		}
		return b
	}
	fuzzcheck.WriteSeed(t, "FuzzShardRecords", "one-record", uint8(1), uint8(0), rec(2, 1), uint16(0), uint8(0))
	fuzzcheck.WriteSeed(t, "FuzzShardRecords", "three-shards-flipped", uint8(0), uint8(1), rec(1, 5), uint16(17), uint8(1))
	fuzzcheck.WriteSeed(t, "FuzzShardRecords", "two-shards-truncated", uint8(2), uint8(2), rec(3, 4), uint16(100), uint8(2))
	fuzzcheck.WriteSeed(t, "FuzzShardRecords", "grown", uint8(3), uint8(0), rec(4, 2), uint16(3), uint8(3))
	fuzzcheck.WriteSeed(t, "FuzzShardRecords", "empty-split", uint8(0), uint8(0), []byte{1, 2, 3}, uint16(0), uint8(0))
}

// FuzzManifest parses arbitrary bytes as a dataset manifest (as Fetch does
// with a remote one, and ReadManifest with a file). An accepted manifest
// must describe shards the reader can trust: the format and version this
// package writes, record_bytes = 4·S², at most 64 MiB per shard, shards
// named <split>-NNNNN.bin in order (so no file is listed twice or stands
// for the manifest), every shard but a split's last full, byte sizes equal
// to records × record_bytes, counts that add up (all in exact arithmetic,
// so no overflow can make them agree), and every index below a split's
// count in one of its shards. Marshal → parse must give it back, and
// ReadManifest must agree with parseManifest.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"format":"tinct-dataset","version":1,"image_size":2,"record_bytes":16,"records_per_shard":2,"splits":` +
		`{"train":{"count":3,"shards":[{"file":"train-00000.bin","records":2,"bytes":32,"sha256":"00"},{"file":"train-00001.bin","records":1,"bytes":16,"sha256":"11"}]}}}`))
	f.Add([]byte(`{"format":"tinct-dataset","version":1,"image_size":2048,"record_bytes":16777216,"records_per_shard":4,"splits":{"val":{"count":0,"shards":[]}}}`))
	f.Add([]byte(`{"format":"tinct-dataset","version":2}`))
	f.Add([]byte(`[]`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data)
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, ferr := ReadManifest(dir); (ferr == nil) != (err == nil) {
			t.Fatalf("ReadManifest: %v; parseManifest: %v", ferr, err)
		}
		if err != nil {
			return
		}
		if m.Format != FormatName || m.Version != FormatVersion || m.ImageSize < 1 || m.ImageSize > MaxImageSize || m.RecordBytes != 4*m.ImageSize*m.ImageSize {
			t.Fatalf("accepted format %q version %d, size %d, record bytes %d", m.Format, m.Version, m.ImageSize, m.RecordBytes)
		}
		recBytes := big.NewInt(int64(m.RecordBytes))
		per := big.NewInt(int64(m.RecordsPerShard))
		if m.RecordsPerShard < 1 || m.RecordsPerShard > 1 && new(big.Int).Mul(per, recBytes).Cmp(big.NewInt(MaxShardBytes)) > 0 {
			t.Fatalf("accepted %d records of %d bytes per shard", m.RecordsPerShard, m.RecordBytes)
		}
		for name, sp := range m.Splits {
			total := new(big.Int)
			for i, sh := range sp.Shards {
				if want := fmt.Sprintf("%s-%05d.bin", name, i); sh.File != want {
					t.Fatalf("split %s: accepted shard %d named %q", name, i, sh.File)
				}
				if sh.Records < 1 || sh.Records > m.RecordsPerShard || i < len(sp.Shards)-1 && sh.Records != m.RecordsPerShard {
					t.Fatalf("split %s: accepted shard %d of %d records (%d per shard)", name, i, sh.Records, m.RecordsPerShard)
				}
				if new(big.Int).Mul(big.NewInt(int64(sh.Records)), recBytes).Cmp(big.NewInt(sh.Bytes)) != 0 {
					t.Fatalf("split %s: accepted shard of %d records × %d bytes listed as %d bytes", name, sh.Records, m.RecordBytes, sh.Bytes)
				}
				total.Add(total, big.NewInt(int64(sh.Records)))
			}
			if total.Cmp(big.NewInt(int64(sp.Count))) != 0 {
				t.Fatalf("split %s: accepted count %d for shards holding %v", name, sp.Count, total)
			}
			if sp.Count > 0 && (sp.Count-1)/m.RecordsPerShard != len(sp.Shards)-1 {
				t.Fatalf("split %s: the last of %d images is not in its last shard", name, sp.Count)
			}
		}

		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := parseManifest(enc)
		if err != nil {
			t.Fatalf("a marshalled manifest does not parse: %v\n%s", err, enc)
		}
		if len(m.Notes) == 0 {
			m.Notes = nil
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("marshal → parse changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}

// FuzzShardRecords writes the fuzzer's bytes as the records of a prepared
// split (images of side 1–4, 1–3 records per shard) with the package's
// shard writer, then reads them back. Open must find every record, Load
// must give each byte back as v/127.5 − 1 in place (and mirrored with
// flip), Verify must pass, and indices outside the split must fail. Then
// one shard is damaged (op 1: a byte flipped; 2: truncated; 3: grown): a
// flipped byte must fail Verify, a changed size must fail Open, and
// nothing may panic.
func FuzzShardRecords(f *testing.F) {
	f.Add(uint8(0), uint8(0), []byte{0, 127, 128, 255}, uint16(0), uint8(0))
	f.Add(uint8(1), uint8(1), bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 3), uint16(5), uint8(1))
	f.Add(uint8(0), uint8(2), []byte{9, 9, 9, 9, 8, 8, 8, 8}, uint16(2), uint8(2))
	f.Fuzz(func(t *testing.T, sizeSel, perSel uint8, records []byte, where uint16, op uint8) {
		size, perShard := 1+int(sizeSel%4), 1+int(perSel%3)
		recBytes := recordBytes(size)
		if len(records) > 16*recBytes {
			records = records[:16*recBytes]
		}
		n := len(records) / recBytes
		dir := t.TempDir()
		m := writeRecords(t, dir, size, perShard, records)

		s, err := Open(dir, SplitTrain)
		if err != nil {
			t.Fatalf("Open of what the writer wrote: %v", err)
		}
		defer s.Close()
		if s.Len() != n || s.ImageSize() != size {
			t.Fatalf("Len %d, ImageSize %d; wrote %d records of side %d", s.Len(), s.ImageSize(), n, size)
		}
		px := size * size
		color, gray := make([]float32, 3*px), make([]float32, px)
		for i := range n {
			rec := records[i*recBytes : (i+1)*recBytes]
			for _, flip := range []bool{false, true} {
				if err := s.Load(i, color, gray, flip); err != nil {
					t.Fatalf("Load(%d): %v", i, err)
				}
				for c := range 4 {
					dst := gray
					if c < 3 {
						dst = color[c*px : (c+1)*px]
					}
					for k, v := range rec[c*px : (c+1)*px] {
						y, x := k/size, k%size
						if flip {
							x = size - 1 - x
						}
						if got, want := dst[y*size+x], float32(v)/127.5-1; got != want {
							t.Fatalf("record %d channel %d pixel %d (flip %v): %v, want %v", i, c, k, flip, got, want)
						}
					}
				}
			}
		}
		for _, i := range []int{-1, n, n + perShard} {
			if err := s.Load(i, color, gray, false); err == nil {
				t.Fatalf("Load(%d) of a split of %d images succeeded", i, n)
			}
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("Verify of what the writer wrote: %v", err)
		}
		s.Close()

		shards := m.Splits[SplitTrain].Shards
		if len(shards) == 0 || op%4 == 0 {
			return
		}
		sh := shards[int(where)%len(shards)]
		path := filepath.Join(dir, sh.File)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		switch op % 4 {
		case 1:
			b[int(where)%len(b)] ^= 1 << (where % 8)
		case 2:
			b = b[:int(where)%len(b)]
		case 3:
			b = append(b, byte(where))
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		// Open checks every shard's sha256: a resized or flipped shard is
		// refused, naming the file
		s, err = Open(dir, SplitTrain)
		if err == nil {
			s.Close()
			t.Fatalf("Open accepted shard %s changed (op %d: %d bytes, listed as %d)", sh.File, op%4, len(b), sh.Bytes)
		}
		if !strings.Contains(err.Error(), sh.File) {
			t.Fatalf("Open's error does not name %s: %v", sh.File, err)
		}
	})
}
