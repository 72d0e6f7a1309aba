package dataset

import (
	"context"
	"encoding/json"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// prepareExact writes n 32×32 PNG images with distinct content and prepares
// them at size 32 (no resampling), all into train. It returns the dataset
// folder and the source images by their color in the top-left pixel.
func prepareExact(t *testing.T, n int) (string, map[uint8]*image.NRGBA) {
	t.Helper()
	src := t.TempDir()
	imgs := map[uint8]*image.NRGBA{}
	for i := range n {
		img := pattern(32, 32, i)
		img.Pix[0] = uint8(i * 9) // unique key
		imgs[img.Pix[0]] = img
		writeFile(t, src, filepath.Join("p", string(rune('a'+i))+".png"), encodePNG(t, img))
	}
	out := t.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 32}); err != nil {
		t.Fatal(err)
	}
	return out, imgs
}

func TestOpenLoadRoundTrip(t *testing.T) {
	withShardLimit(t, 2*4*32*32) // two records per shard: exercise shard lookup
	const n = 5
	dir, imgs := prepareExact(t, n)
	s, err := Open(dir, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len() != n || s.ImageSize() != 32 || s.Split() != SplitTrain || len(s.Manifest().Splits[SplitTrain].Shards) != 3 {
		t.Fatalf("len %d size %d split %s shards %d", s.Len(), s.ImageSize(), s.Split(), len(s.Manifest().Splits[SplitTrain].Shards))
	}
	const S = 32
	seen := map[uint8]bool{}
	for i := range n {
		for _, flip := range []bool{false, true} {
			c, g := make([]float32, 3*S*S), make([]float32, S*S)
			if err := s.Load(i, c, g, flip); err != nil {
				t.Fatal(err)
			}
			// Identify the source image by its top-left pixel.
			x0 := 0
			if flip {
				x0 = S - 1
			}
			key := uint8(math.Round(float64(c[x0]+1) * 127.5))
			img, ok := imgs[key]
			if !ok {
				t.Fatalf("image %d: top-left red %v matches no source image", i, c[x0])
			}
			seen[key] = true
			gray := ToGray(img)
			for y := 0; y < S; y++ {
				for x := 0; x < S; x++ {
					sx := x
					if flip {
						sx = S - 1 - x
					}
					p := img.NRGBAAt(sx, y)
					want := [4]uint8{p.R, p.G, p.B, gray.GrayAt(sx, y).Y}
					got := [4]float32{c[y*S+x], c[S*S+y*S+x], c[2*S*S+y*S+x], g[y*S+x]}
					for ch := range 4 {
						if got[ch] != float32(want[ch])/127.5-1 {
							t.Fatalf("image %d flip=%v (%d,%d) channel %d = %v, want %v", i, flip, x, y, ch, got[ch], float32(want[ch])/127.5-1)
						}
					}
				}
			}
		}
	}
	if len(seen) != n {
		t.Errorf("loaded %d distinct images, want %d", len(seen), n)
	}
	if err := s.Verify(); err != nil {
		t.Errorf("verify: %v", err)
	}

	// Empty splits open with length 0.
	v, err := Open(dir, SplitVal)
	if err != nil || v.Len() != 0 {
		t.Fatalf("val: len %v err %v", v, err)
	}
	v.Close()
}

func TestLoadConcurrent(t *testing.T) {
	dir, _ := prepareExact(t, 6)
	s, err := Open(dir, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const S = 32
	want := make([][]float32, s.Len())
	for i := range want {
		want[i] = make([]float32, 3*S*S)
		if err := s.Load(i, want[i], make([]float32, S*S), false); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, g := make([]float32, 3*S*S), make([]float32, S*S)
			for k := range 50 {
				i := (w + k) % s.Len()
				if err := s.Load(i, c, g, false); err != nil {
					errs <- err.Error()
					return
				}
				for j := range c {
					if c[j] != want[i][j] {
						errs <- "concurrent load returned different values"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestLoadErrors(t *testing.T) {
	dir, _ := prepareExact(t, 2)
	s, err := Open(dir, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	const n = 32 * 32
	tests := []struct {
		name        string
		i           int
		color, gray int
		want        string
	}{
		{"negative index", -1, 3 * n, n, "out of range"},
		{"index too big", 2, 3 * n, n, "out of range"},
		{"short color", 0, 3*n - 1, n, "buffers"},
		{"long gray", 0, 3 * n, n + 1, "buffers"},
	}
	for _, tc := range tests {
		err := s.Load(tc.i, make([]float32, tc.color), make([]float32, tc.gray), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	s.Close()
	if err := s.Load(0, make([]float32, 3*n), make([]float32, n), false); err == nil {
		t.Error("load after close succeeded")
	}
}

func TestOpenDetectsDamage(t *testing.T) {
	shard := "train-00000.bin"
	tests := []struct {
		name      string
		damage    func(t *testing.T, dir string)
		openErr   string // substring of Open's error, "" if Open succeeds
		verifyErr string // substring of Verify's error, "" if it succeeds
	}{
		{"intact", func(*testing.T, string) {}, "", ""},
		{"flipped byte", func(t *testing.T, dir string) {
			path := filepath.Join(dir, shard)
			b, _ := os.ReadFile(path)
			b[len(b)/2] ^= 0xff
			os.WriteFile(path, b, 0o644)
		}, "sha256", ""},
		{"truncated shard", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, shard), 100)
		}, shard, ""},
		{"grown shard", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, shard), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{1})
			f.Close()
		}, shard, ""},
		{"missing shard", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, shard))
		}, shard + " is missing", ""},
		{"missing manifest", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestFile))
		}, "no manifest.json", ""},
		{"garbled manifest", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644)
		}, "parse", ""},
		{"future version", func(t *testing.T, dir string) { editManifest(t, dir, func(m *Manifest) { m.Version = 99 }) }, "version 99", ""},
		{"escaping shard name", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m *Manifest) { m.Splits[SplitTrain].Shards[0].File = "../x.bin" })
		}, "plain file name", ""},
		{"wrong count", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m *Manifest) { sp := m.Splits[SplitTrain]; sp.Count++; m.Splits[SplitTrain] = sp })
		}, "count", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := prepareExact(t, 3)
			tc.damage(t, dir)
			s, err := Open(dir, SplitTrain)
			if tc.openErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.openErr) {
					t.Fatalf("Open: err = %v, want one containing %q", err, tc.openErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			err = s.Verify()
			if tc.verifyErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.verifyErr) || !strings.Contains(err.Error(), shard) {
				t.Fatalf("Verify: err = %v, want one naming %s and containing %q", err, shard, tc.verifyErr)
			}
		})
	}
	if _, err := Open(t.TempDir(), "training"); err == nil || !strings.Contains(err.Error(), "unknown split") {
		t.Errorf("bad split name: err = %v", err)
	}
}

// editManifest rewrites a prepared folder's manifest.
func editManifest(t *testing.T, dir string, edit func(*Manifest)) {
	t.Helper()
	path := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	if b, err = json.Marshal(&m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadSolidColor checks value scaling end to end on a solid image that
// is resized on the way.
func TestLoadSolidColor(t *testing.T) {
	src := t.TempDir()
	c := color.NRGBA{200, 40, 90, 255}
	writeFile(t, src, "x.png", encodePNG(t, solid(50, 70, c)))
	out := t.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 12}); err != nil {
		t.Fatal(err)
	}
	colors, grays := loadAll(t, out, SplitTrain)
	if len(colors) != 1 || !colorIs(colors[0], c) || !planeIs(grays[0], luma(c.R, c.G, c.B)) {
		t.Fatalf("loaded %d images; first color ok %v, gray ok %v", len(colors), colorIs(colors[0], c), planeIs(grays[0], luma(c.R, c.G, c.B)))
	}
	if got := colors[0][0]; got != 200/127.5-1 {
		t.Fatalf("red = %v, want 200/127.5-1", got)
	}
}
