package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)

// blob returns n deterministic pseudo-random bytes.
func blob(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// ck returns a checkpoint with the parts a trainer writes.
func ck(name string, step int64) *Checkpoint {
	s := int(step)
	return &Checkpoint{
		Name:  name,
		Step:  step,
		Epoch: s / 10,
		Time:  t0.Add(time.Duration(step) * time.Second),
		Parts: map[string][]byte{
			"weights.safetensors":   blob(s, 4096),
			"ema.safetensors":       blob(s+1, 4096),
			"optimizer.safetensors": blob(s+2, 8192),
			"state.json":            []byte(fmt.Sprintf(`{"step":%d}`, step)),
			"config.yaml":           []byte("lr: 2e-4\n"),
		},
	}
}

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func save(t *testing.T, d Store, cs ...*Checkpoint) {
	t.Helper()
	for _, c := range cs {
		if err := d.Save(context.Background(), c); err != nil {
			t.Fatalf("Save(%s): %v", c.Name, err)
		}
	}
}

func names(infos []Info) []string {
	var out []string
	for _, in := range infos {
		out = append(out, in.Name)
	}
	return out
}

func listNames(t *testing.T, d Store) []string {
	t.Helper()
	infos, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return names(infos)
}

// hidden returns the dot entries in the store's directory.
func hidden(t *testing.T, d *Dir) []string {
	t.Helper()
	entries, err := os.ReadDir(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func readLatest(t *testing.T, f fixture) string {
	t.Helper()
	return strings.TrimSpace(string(f.readRaw(t, "latest")))
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sameCheckpoint(t *testing.T, got, want *Checkpoint) {
	t.Helper()
	if got.Name != want.Name || got.Step != want.Step || got.Epoch != want.Epoch || !got.Time.Equal(want.Time) {
		t.Errorf("header = %s step %d epoch %d %v, want %s step %d epoch %d %v",
			got.Name, got.Step, got.Epoch, got.Time, want.Name, want.Step, want.Epoch, want.Time)
	}
	if len(got.Parts) != len(want.Parts) {
		t.Errorf("%d parts, want %d", len(got.Parts), len(want.Parts))
	}
	for name, data := range want.Parts {
		if g, ok := got.Parts[name]; !ok || !bytes.Equal(g, data) {
			t.Errorf("part %s differs (present %v, %d bytes, want %d)", name, ok, len(g), len(data))
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    *Checkpoint
	}{
		{"trainer parts", ck("epoch-000050", 50)},
		{"empty part", &Checkpoint{Name: "e", Step: 1, Time: t0, Parts: map[string][]byte{"empty.bin": {}, "one": {7}}}},
		{"no parts", &Checkpoint{Name: "bare", Step: 2, Epoch: 3, Time: t0}},
		{"time with zone", &Checkpoint{Name: "zoned", Step: 3, Time: t0.In(time.FixedZone("X", 5*3600)),
			Parts: map[string][]byte{"state.json": []byte("{}")}}},
		{"longest name", &Checkpoint{Name: strings.Repeat("n", 128), Time: t0, Parts: map[string][]byte{strings.Repeat("p", 128): {1}}}},
	}
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				d := newStore(t)
				save(t, d, tt.c)
				got, err := d.Load(ctx, tt.c.Name)
				if err != nil {
					t.Fatal(err)
				}
				sameCheckpoint(t, got, tt.c)
				if err := d.Verify(ctx, tt.c.Name); err != nil {
					t.Errorf("Verify: %v", err)
				}
				if l := readLatest(t, d); l != tt.c.Name {
					t.Errorf("latest = %q, want %q", l, tt.c.Name)
				}
				if h := d.leftovers(t); len(h) != 0 {
					t.Errorf("leftovers after Save: %v", h)
				}
				infos, err := d.List(ctx)
				if err != nil || len(infos) != 1 {
					t.Fatalf("List = %v, %v; want one", infos, err)
				}
				var size int64
				for _, p := range tt.c.Parts {
					size += int64(len(p))
				}
				if in := infos[0]; in.Name != tt.c.Name || in.Step != tt.c.Step || in.Epoch != tt.c.Epoch || !in.Time.Equal(tt.c.Time) || in.Size != size {
					t.Errorf("Info = %+v, want size %d and the checkpoint's header", in, size)
				}
			})
		}
	})
}

func TestSaveZeroTimeRecordsNow(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		d := newStore(t)
		before := time.Now()
		save(t, d, &Checkpoint{Name: "a"})
		got, err := d.Load(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		if got.Time.Before(before.Add(-time.Second)) || got.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("Time = %v, want about now", got.Time)
		}
	})
}

func TestManifest(t *testing.T) {
	forEachStore(t, testManifest)
}

func testManifest(t *testing.T, newStore func(*testing.T) fixture) {
	d := newStore(t)
	c := ck("epoch-000001", 1)
	save(t, d, c)
	data := d.readRaw(t, c.Name+"/manifest.json")
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m.Version != 1 || m.Name != c.Name || m.Step != 1 || len(m.Parts) != len(c.Parts) {
		t.Fatalf("manifest = %+v", m)
	}
	for i, p := range m.Parts {
		sum := sha256.Sum256(c.Parts[p.Name])
		if p.Size != int64(len(c.Parts[p.Name])) || p.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("part %s: size %d sha256 %s", p.Name, p.Size, p.SHA256)
		}
		if i > 0 && m.Parts[i-1].Name >= p.Name {
			t.Errorf("parts not in name order: %s before %s", m.Parts[i-1].Name, p.Name)
		}
		if !d.exists(t, c.Name+"/"+p.Name) {
			t.Errorf("part %s not stored as %s/%s", p.Name, c.Name, p.Name)
		}
	}
}

func TestListOrder(t *testing.T) {
	forEachStore(t, testListOrder)
}

func testListOrder(t *testing.T, newStore func(*testing.T) fixture) {
	d := newStore(t)
	at := func(name string, step int64, sec int) *Checkpoint {
		return &Checkpoint{Name: name, Step: step, Time: t0.Add(time.Duration(sec) * time.Second)}
	}
	save(t, d, at("a", 100, 1), at("b", 300, 0), at("c", 200, 2), at("d", 300, 5), at("e", 300, 5))
	// Not checkpoints: List skips them.
	d.writeRaw(t, "notes.txt", []byte("hi"))
	d.writeRaw(t, "garbage/manifest.json", []byte("{"))
	d.writeRaw(t, "partial/weights.safetensors", []byte("w"))
	d.writeRaw(t, ".tmp-f-1/manifest.json", []byte(`{"version":1,"step":999}`))
	d.writeRaw(t, "nested/deeper/manifest.json", []byte(`{"version":1,"step":998}`))

	want := []string{"e", "d", "b", "c", "a"} // step, then time, then name, descending
	if got := listNames(t, d); !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

func TestLatest(t *testing.T) {
	const (
		c10 = "epoch-000010"
		c20 = "epoch-000020"
		c30 = "epoch-000030"
	)
	type damage = func(*testing.T, fixture)
	part := func(name, p string) string { return name + "/" + p }
	truncate := func(name, p string) damage {
		return func(t *testing.T, d fixture) {
			d.writeRaw(t, part(name, p), d.readRaw(t, part(name, p))[:1000])
		}
	}
	flip := func(name, p string) damage {
		return func(t *testing.T, d fixture) {
			data := d.readRaw(t, part(name, p))
			data[len(data)/2] ^= 0x10
			d.writeRaw(t, part(name, p), data)
		}
	}
	setLatest := func(s string) damage {
		return func(t *testing.T, d fixture) { d.writeRaw(t, "latest", []byte(s)) }
	}
	remove := func(key string) damage {
		return func(t *testing.T, d fixture) { d.removeRaw(t, key) }
	}
	write := func(key, data string) damage {
		return func(t *testing.T, d fixture) { d.writeRaw(t, key, []byte(data)) }
	}
	both := func(fs ...damage) damage {
		return func(t *testing.T, d fixture) {
			for _, f := range fs {
				f(t, d)
			}
		}
	}

	// Warnings are substrings; {file} and {store} are filled in per store
	// (see expand).
	tests := []struct {
		name     string
		damage   damage
		want     string
		warnings []string // one substring per expected warning, in order
		corrupt  string   // if set, the first warning is a *CorruptError for this file
	}{
		{name: "intact", want: c30},
		{name: "truncated part", damage: truncate(c30, "weights.safetensors"), want: c20,
			warnings: []string{"part weights.safetensors: size 1000 bytes, manifest says 4096 ({file} truncated"}, corrupt: "weights.safetensors"},
		{name: "bit flip", damage: flip(c30, "ema.safetensors"), want: c20,
			warnings: []string{"checkpoint epoch-000030: part ema.safetensors: sha256 mismatch ({file} corrupt; resume skips this checkpoint)"},
			corrupt:  "ema.safetensors"},
		{name: "extra bytes", damage: write(part(c30, "state.json"), `{"step":30}   `), want: c20,
			warnings: []string{"part state.json: size 14 bytes, manifest says 11 ({file} corrupt"}, corrupt: "state.json"},
		{name: "missing part", damage: remove(part(c30, "config.yaml")), want: c20,
			warnings: []string{"part config.yaml: missing ({file} deleted"}, corrupt: "config.yaml"},
		{name: "deleted checkpoint", damage: func(t *testing.T, d fixture) { d.removeAllRaw(t, c30) }, want: c20,
			warnings: []string{"latest pointer names epoch-000030, which is gone from {store} "}},
		{name: "garbage manifest", damage: write(part(c30, "manifest.json"), "\x00garbage{"),
			want: c20, warnings: []string{"manifest.json: invalid JSON"}, corrupt: "manifest.json"},
		{name: "missing manifest", damage: remove(part(c30, "manifest.json")),
			want: c20, warnings: []string{"manifest.json: missing"}, corrupt: "manifest.json"},
		{name: "newer format", damage: func(t *testing.T, d fixture) {
			data := d.readRaw(t, part(c30, "manifest.json"))
			d.writeRaw(t, part(c30, "manifest.json"), bytes.Replace(data, []byte(`"version": 1`), []byte(`"version": 2`), 1))
		}, want: c20, warnings: []string{"upgrade tinct"}},
		{name: "no latest pointer", damage: remove("latest"), want: c30},
		{name: "no pointer and newest manifest garbage", damage: both(
			remove("latest"),
			write(part(c30, "manifest.json"), `{"version":1,"parts":[{"name":"../x"}]}`),
		), want: c20, warnings: []string{`epoch-000030: manifest.json: bad part entry: invalid part name "../x"`}},
		{name: "garbage latest pointer", damage: setLatest("../../etc/passwd"), want: c30,
			warnings: []string{`holds "../../etc/passwd", which is not a checkpoint name`}},
		// A save cut short after the checkpoint was complete but before the
		// pointer moved (a SIGKILL between the two): the pointer is only a
		// hint, and the newest valid checkpoint in the listing wins. A
		// pointer that lags is normal (it does during every save), so it is
		// not reported.
		{name: "pointer not yet moved", damage: setLatest(c20 + "\n"), want: c30},
		{name: "step order wins over the pointer", damage: setLatest(c10), want: c30},
		{name: "pointer at older corrupt one", damage: both(setLatest(c10), flip(c10, "weights.safetensors")), want: c30},
		{name: "pointer not yet moved, newest corrupt", damage: both(setLatest(c10), flip(c30, "weights.safetensors")), want: c20,
			warnings: []string{"epoch-000030: part weights.safetensors: sha256 mismatch"}, corrupt: "weights.safetensors"},
		{name: "newest two damaged", damage: both(flip(c30, "weights.safetensors"), truncate(c20, "optimizer.safetensors")), want: c10,
			warnings: []string{"epoch-000030: part weights.safetensors: sha256", "epoch-000020: part optimizer.safetensors: size 1000"}},
	}
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := newStore(t)
				cs := []*Checkpoint{ck(c10, 10), ck(c20, 20), ck(c30, 30)}
				save(t, d, cs...)
				if tt.damage != nil {
					tt.damage(t, d)
				}
				got, warnings, err := d.Latest(context.Background())
				if err != nil {
					t.Fatalf("Latest: %v (warnings %v)", err, warnings)
				}
				for _, c := range cs {
					if c.Name == tt.want {
						sameCheckpoint(t, got, c)
					}
				}
				if len(warnings) != len(tt.warnings) {
					t.Fatalf("warnings = %q, want %d", warnings, len(tt.warnings))
				}
				for i, w := range warnings {
					if want := expand(d, tt.warnings[i]); !strings.Contains(w.Error(), want) {
						t.Errorf("warning %d = %q, want it to contain %q", i, w, want)
					}
				}
				if tt.corrupt != "" {
					var ce *CorruptError
					if !errors.As(warnings[0], &ce) || ce.File != tt.corrupt || !errors.Is(warnings[0], ErrCorrupt) {
						t.Errorf("warning %q is not a CorruptError for %s", warnings[0], tt.corrupt)
					}
				}
			})
		}
	})
}

// TestLatestNotFound: with no valid checkpoint Latest fails with
// ErrNotFound. An empty store (nothing that is or was a checkpoint) is
// ErrEmpty; otherwise the error names the store and what was wrong with
// each candidate, so that a resume can refuse to start afresh over them.
func TestLatestNotFound(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(*testing.T, fixture)
		problems []string // substrings of the error, one per candidate; none: the store is empty
	}{
		{name: "empty store"},
		{name: "only foreign entries", setup: func(t *testing.T, d fixture) {
			d.writeRaw(t, "partial/weights.safetensors", []byte("w"))
			d.writeRaw(t, ".tmp-x-1/manifest.json", []byte("{}"))
		}},
		{name: "only a garbage manifest", setup: func(t *testing.T, d fixture) {
			d.writeRaw(t, "a/manifest.json", []byte("["))
		}, problems: []string{"checkpoint a: manifest.json: invalid JSON"}},
		{name: "pointer at deleted only checkpoint", setup: func(t *testing.T, d fixture) {
			save(t, d, ck("a", 1))
			d.removeAllRaw(t, "a")
		}, problems: []string{"latest pointer names a, which is gone"}},
		{name: "all corrupt", setup: func(t *testing.T, d fixture) {
			save(t, d, ck("a", 1), ck("b", 2))
			d.writeRaw(t, "a/state.json", nil)
			d.writeRaw(t, "b/state.json", nil)
		}, problems: []string{"checkpoint b: part state.json: size 0 bytes", "checkpoint a: part state.json: size 0 bytes"}},
	}
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := newStore(t)
				if tt.setup != nil {
					tt.setup(t, d)
				}
				c, warnings, err := d.Latest(context.Background())
				if c != nil || !errors.Is(err, ErrNotFound) {
					t.Fatalf("Latest = %v, %v; want ErrNotFound", c, err)
				}
				if len(warnings) != len(tt.problems) {
					t.Errorf("warnings = %q, want %d", warnings, len(tt.problems))
				}
				if empty := len(tt.problems) == 0; errors.Is(err, ErrEmpty) != empty {
					t.Fatalf("Latest: %v; errors.Is(err, ErrEmpty) = %v, want %v", err, !empty, empty)
				}
				if len(tt.problems) == 0 {
					return
				}
				for _, want := range append([]string{"no valid checkpoint in " + d.String()}, tt.problems...) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Latest: %v\nwant it to contain %q", err, want)
					}
				}
			})
		}
	})
}

func TestLoadErrors(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		d := newStore(t)
		save(t, d, ck("a", 1))
		ctx := context.Background()
		if _, err := d.Load(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Load(missing) = %v, want ErrNotFound", err)
		}
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := d.Load(canceled, "a"); !errors.Is(err, context.Canceled) {
			t.Errorf("Load(canceled) = %v, want context.Canceled", err)
		}
	})
}

func TestVerify(t *testing.T) {
	forEachStore(t, testVerify)
}

func testVerify(t *testing.T, newStore func(*testing.T) fixture) {
	ctx := context.Background()
	d := newStore(t)
	save(t, d, ck("epoch-000050", 50), ck("epoch-000060", 60))
	key := "epoch-000050/weights.safetensors"
	data := d.readRaw(t, key)
	data[0] ^= 1
	d.writeRaw(t, key, data)
	key = "epoch-000060/ema.safetensors"
	d.writeRaw(t, key, d.readRaw(t, key)[:10])

	tests := []struct {
		name, ckpt, want string
	}{
		{"valid", "epoch-000060x", ""},
		{"bit flip", "epoch-000050", "checkpoint epoch-000050: part weights.safetensors: sha256 mismatch ({file} corrupt; resume skips this checkpoint)"},
		{"truncated", "epoch-000060", "checkpoint epoch-000060: part ema.safetensors: size 10 bytes, manifest says 4096 ({file} truncated; resume skips this checkpoint)"},
	}
	save(t, d, ck("epoch-000060x", 61))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Verify streams the parts; Load must report the same.
			_, loadErr := d.Load(ctx, tt.ckpt)
			for _, err := range []error{d.Verify(ctx, tt.ckpt), loadErr} {
				if tt.want == "" {
					if err != nil {
						t.Fatal(err)
					}
				} else if want := expand(d, tt.want); err == nil || err.Error() != want || !errors.Is(err, ErrCorrupt) {
					t.Errorf("Verify or Load = %v\nwant %s", err, want)
				}
			}
		})
	}
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name        string
		steps       []int64 // saved in this order; the last is latest
		keep        int
		wantRemoved []string
		wantLeft    []string
	}{
		{"keep 0 keeps all", []int64{1, 2, 3}, 0, nil, []string{"s3", "s2", "s1"}},
		{"negative keeps all", []int64{1, 2, 3}, -1, nil, []string{"s3", "s2", "s1"}},
		{"keep more than there are", []int64{1, 2}, 5, nil, []string{"s2", "s1"}},
		{"keep 2 of 4", []int64{1, 2, 3, 4}, 2, []string{"s2", "s1"}, []string{"s4", "s3"}},
		{"keep 1", []int64{1, 2, 3}, 1, []string{"s2", "s1"}, []string{"s3"}},
		{"never the latest target", []int64{100, 200, 300, 50}, 1, []string{"s200", "s100"}, []string{"s300", "s50"}},
		{"latest target within keep", []int64{100, 300, 200}, 2, []string{"s100"}, []string{"s300", "s200"}},
		// Damaged checkpoints (marked by a negative step) do not count
		// toward keep: the valid ones are kept, the damaged ones among them
		// stay, and everything older than the keep-th valid one goes.
		{"damaged do not count", []int64{-100, -200, -300, 50, 60}, 2, nil, []string{"s300", "s200", "s100", "s60", "s50"}},
		{"newest valid kept", []int64{10, -20, -30}, 1, nil, []string{"s30", "s20", "s10"}},
		{"damaged between kept", []int64{1, 2, 3, -4, 5}, 2, []string{"s2", "s1"}, []string{"s5", "s4", "s3"}},
		{"damaged beyond keep", []int64{-1, 2, -3, 4, 5}, 2, []string{"s3", "s2", "s1"}, []string{"s5", "s4"}},
	}
	forEachStore(t, func(t *testing.T, newStore func(*testing.T) fixture) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := newStore(t)
				for _, s := range tt.steps {
					name := fmt.Sprintf("s%d", max(s, -s))
					save(t, d, &Checkpoint{Name: name, Step: max(s, -s), Time: t0, Parts: map[string][]byte{"w": blob(int(s), 64)}})
					if s < 0 {
						d.writeRaw(t, name+"/w", blob(0, 64))
					}
				}
				removed, err := d.Prune(context.Background(), tt.keep)
				// the damaged checkpoints it keeps are reported
				var kept []string
				for _, s := range tt.steps {
					if name := fmt.Sprintf("s%d", -s); s < 0 && slices.Contains(tt.wantLeft, name) && tt.keep > 0 {
						kept = append(kept, name)
					}
				}
				if len(kept) == 0 && err != nil {
					t.Fatal(err)
				}
				for _, name := range kept {
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checkpoint "+name+": part w: sha256 mismatch") {
						t.Errorf("Prune: %v; want it to report damaged checkpoint %s", err, name)
					}
				}
				if !slices.Equal(removed, tt.wantRemoved) {
					t.Errorf("removed %v, want %v", removed, tt.wantRemoved)
				}
				if got := listNames(t, d); !slices.Equal(got, tt.wantLeft) {
					t.Errorf("left %v, want %v", got, tt.wantLeft)
				}
				if last := tt.steps[len(tt.steps)-1]; readLatest(t, d) != fmt.Sprintf("s%d", max(last, -last)) {
					t.Errorf("latest = %s", readLatest(t, d))
				}
				if h := d.leftovers(t); len(h) != 0 {
					t.Errorf("leftovers after Prune: %v", h)
				}
			})
		}
	})
}

func TestInvalidNames(t *testing.T) {
	forEachStore(t, testInvalidNames)
}

func testInvalidNames(t *testing.T, newStore func(*testing.T) fixture) {
	ctx := context.Background()
	badNames := []string{"", ".", "..", ".hidden", "a/b", "../escape", `a\b`, "a b", "latest", "épée", "x\x00", "a:b",
		strings.Repeat("a", 129)}
	for _, name := range badNames {
		t.Run(fmt.Sprintf("checkpoint %q", name), func(t *testing.T) {
			d := newStore(t)
			if err := d.Save(ctx, &Checkpoint{Name: name, Parts: map[string][]byte{"w": {1}}}); err == nil || !strings.Contains(err.Error(), "invalid checkpoint name") {
				t.Errorf("Save: %v, want an invalid name error", err)
			}
			if _, err := d.Load(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Load: %v, want an invalid name error", err)
			}
			if err := d.Delete(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Delete: %v, want an invalid name error", err)
			}
			if !d.empty(t) {
				t.Error("store not empty")
			}
		})
	}
	badParts := []string{"", "manifest.json", "a/b", "../x", ".x", "a b", strings.Repeat("p", 129)}
	for _, part := range badParts {
		t.Run(fmt.Sprintf("part %q", part), func(t *testing.T) {
			d := newStore(t)
			err := d.Save(ctx, &Checkpoint{Name: "ok", Parts: map[string][]byte{"w": {1}, part: {2}}})
			if err == nil || !strings.Contains(err.Error(), "invalid part name") {
				t.Errorf("Save: %v, want an invalid part name error", err)
			}
			if !d.empty(t) {
				t.Error("store not empty")
			}
		})
	}
	d := newStore(t)
	for _, c := range []*Checkpoint{nil, {Name: "neg", Step: -1}, {Name: "neg", Epoch: -1}} {
		if err := d.Save(ctx, c); err == nil {
			t.Errorf("Save(%+v) succeeded", c)
		}
	}
	for _, name := range []string{"epoch-000050", "ckpt_1.final", "A-Z.0-9_"} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v", name, err)
		}
	}
}

func TestCrashLeftovers(t *testing.T) {
	for _, cleaner := range []string{"Save", "Prune"} {
		t.Run(cleaner, func(t *testing.T) {
			ctx := context.Background()
			d := newDir(t)
			a, b := ck("a", 1), ck("b", 2)
			save(t, d, a, b)
			// A save cut short before its manifest, a pointer update cut
			// short, a delete cut short, and a directory with parts but no
			// manifest (not ours: never removed).
			writeFile(t, filepath.Join(d.Path(), ".tmp-c-123", "weights.safetensors"), blob(3, 100))
			writeFile(t, filepath.Join(d.Path(), ".tmp-latest-456"), []byte("c"))
			writeFile(t, filepath.Join(d.Path(), ".del-z-abc", "weights.safetensors"), blob(4, 100))
			writeFile(t, filepath.Join(d.Path(), "epoch-000099", "weights.safetensors"), blob(5, 100))

			if got := listNames(t, d); !slices.Equal(got, []string{"b", "a"}) {
				t.Errorf("List = %v, want [b a]", got)
			}
			got, warnings, err := d.Latest(ctx)
			if err != nil || got.Name != "b" || len(warnings) != 0 {
				t.Errorf("Latest = %v, %v, %v; want b", got, warnings, err)
			}

			if cleaner == "Save" {
				save(t, d, ck("c", 3))
			} else if _, err := d.Prune(ctx, 0); err != nil {
				t.Fatal(err)
			}
			if h := hidden(t, d); len(h) != 0 {
				t.Errorf("leftovers after %s: %v", cleaner, h)
			}
			if _, err := os.Stat(filepath.Join(d.Path(), "epoch-000099", "weights.safetensors")); err != nil {
				t.Errorf("directory without manifest was touched: %v", err)
			}
			for _, c := range []*Checkpoint{a, b} {
				if err := d.Verify(ctx, c.Name); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestSaveRefusesForeignDirectory(t *testing.T) {
	d := newDir(t)
	foreign := filepath.Join(d.Path(), "epoch-000099", "notes.txt")
	writeFile(t, foreign, []byte("mine"))
	err := d.Save(context.Background(), ck("epoch-000099", 99))
	if err == nil || !strings.Contains(err.Error(), "no readable manifest.json") {
		t.Fatalf("Save over a foreign directory: %v", err)
	}
	if data, err := os.ReadFile(foreign); err != nil || string(data) != "mine" {
		t.Errorf("foreign file changed: %q, %v", data, err)
	}
	if h := hidden(t, d); len(h) != 0 {
		t.Errorf("leftovers after a failed Save: %v", h)
	}
}

func TestSaveReplaces(t *testing.T) {
	forEachStore(t, testSaveReplaces)
}

func testSaveReplaces(t *testing.T, newStore func(*testing.T) fixture) {
	ctx := context.Background()
	d := newStore(t)
	v1 := ck("a", 10)
	v2 := &Checkpoint{Name: "a", Step: 30, Time: t0, Parts: map[string][]byte{"only.bin": blob(9, 10)}}
	save(t, d, v1, ck("b", 20), v2)
	got, err := d.Load(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	sameCheckpoint(t, got, v2)
	if d.exists(t, "a/weights.safetensors") {
		t.Error("a part of the replaced checkpoint survived")
	}
	if l := listNames(t, d); !slices.Equal(l, []string{"a", "b"}) {
		t.Errorf("List = %v", l)
	}
	if l := readLatest(t, d); l != "a" {
		t.Errorf("latest = %s", l)
	}
	if h := d.leftovers(t); len(h) != 0 {
		t.Errorf("leftovers: %v", h)
	}
}

// A crash between the two renames of a replacing save leaves the old
// checkpoint under .old- and the new one under .tmp-; the old one comes back.
func TestReplaceCrashRecovery(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	a, b := ck("a", 10), ck("b", 20)
	save(t, d, a, b)
	if err := os.Rename(filepath.Join(d.Path(), "b"), filepath.Join(d.Path(), ".old-b-0123456789ab")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.Path(), ".tmp-b-42", "weights.safetensors"), blob(1, 10))

	got, warnings, err := d.Latest(ctx)
	if err != nil || got.Name != "a" || len(warnings) != 1 || !errors.Is(warnings[0], ErrNotFound) {
		t.Fatalf("Latest = %v, %v, %v; want a with a not-found warning", got, warnings, err)
	}
	save(t, d, ck("c", 30))
	restored, err := d.Load(ctx, "b")
	if err != nil {
		t.Fatalf("b not restored: %v", err)
	}
	sameCheckpoint(t, restored, b)
	if l := listNames(t, d); !slices.Equal(l, []string{"c", "b", "a"}) {
		t.Errorf("List = %v", l)
	}
	if h := hidden(t, d); len(h) != 0 {
		t.Errorf("leftovers: %v", h)
	}
}

func TestDelete(t *testing.T) {
	forEachStore(t, testDelete)
}

func testDelete(t *testing.T, newStore func(*testing.T) fixture) {
	ctx := context.Background()
	d := newStore(t)
	save(t, d, ck("a", 1), ck("b", 2), ck("c", 3))

	if err := d.Delete(ctx, "c"); err != nil { // the latest: the pointer moves to b
		t.Fatal(err)
	}
	if l := readLatest(t, d); l != "b" {
		t.Errorf("latest = %s, want b", l)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if l := readLatest(t, d); l != "b" {
		t.Errorf("latest = %s, want b", l)
	}
	if got, warnings, err := d.Latest(ctx); err != nil || got.Name != "b" || len(warnings) != 0 {
		t.Errorf("Latest = %v, %v, %v; want b", got, warnings, err)
	}
	if err := d.Delete(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(deleted) = %v, want ErrNotFound", err)
	}
	d.writeRaw(t, "mine/notes.txt", []byte("x"))
	if err := d.Delete(ctx, "mine"); err == nil || !strings.Contains(err.Error(), "not a checkpoint") {
		t.Errorf("Delete(foreign) = %v, want a refusal", err)
	}
	if err := d.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if d.exists(t, "latest") {
		t.Error("latest survives the last checkpoint")
	}
	if !d.exists(t, "mine/notes.txt") {
		t.Error("an entry that is not a checkpoint was removed")
	}
	if _, warnings, err := d.Latest(ctx); !errors.Is(err, ErrNotFound) || len(warnings) != 0 {
		t.Errorf("Latest on emptied store = %v, %v", warnings, err)
	}
	if l := listNames(t, d); len(l) != 0 {
		t.Errorf("List = %v", l)
	}
	if h := d.leftovers(t); len(h) != 0 {
		t.Errorf("leftovers: %v", h)
	}
}

func TestSaveCanceled(t *testing.T) {
	forEachStore(t, testSaveCanceled)
}

func testSaveCanceled(t *testing.T, newStore func(*testing.T) fixture) {
	d := newStore(t)
	save(t, d, ck("a", 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Save(ctx, ck("b", 2)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save = %v, want context.Canceled", err)
	}
	if l := listNames(t, d); !slices.Equal(l, []string{"a"}) {
		t.Errorf("List = %v", l)
	}
	if l := readLatest(t, d); l != "a" {
		t.Errorf("latest = %s", l)
	}
	if h := d.leftovers(t); len(h) != 0 {
		t.Errorf("leftovers: %v", h)
	}
}

func TestOpen(t *testing.T) {
	base := t.TempDir()
	tests := []struct {
		url     string
		wantDir string // for a store
		wantErr []string
	}{
		{url: filepath.Join(base, "plain", "nested"), wantDir: filepath.Join(base, "plain", "nested")},
		{url: "file://" + base + "/f", wantDir: filepath.Join(base, "f")},
		{url: "file://localhost" + base + "/h", wantDir: filepath.Join(base, "h")},
		{url: "file://" + base + "/with%20space", wantDir: filepath.Join(base, "with space")},
		{url: "s3://bucket/prefix", wantErr: []string{"s3://bucket/prefix: no S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set", "set AWS_ACCESS_KEY_ID"}},
		{url: "S3://Bucket", wantErr: []string{`bucket name "Bucket"`}},
		{url: "s3://bucket:9000/x", wantErr: []string{"only a bucket and a prefix", "TINCT_S3_ENDPOINT"}},
		{url: "s3://key:secret@bucket/x", wantErr: []string{"only a bucket and a prefix", "AWS_ACCESS_KEY_ID"}},
		{url: "s3:///x", wantErr: []string{"no bucket"}},
		{url: "s3://bucket/a//b", wantErr: []string{`key prefix "a//b"`, "empty, '.' and '..' segments"}},
		{url: "s3://bucket/../x", wantErr: []string{"'..' segments"}},
		{url: "s3://bucket/x?y=1", wantErr: []string{"no query"}},
		{url: "", wantErr: []string{"empty", "file:///absolute/dir"}},
		{url: "http://example.com/ckpt", wantErr: []string{`unknown scheme "http"`, "directory path", "file:///absolute/dir", "s3://"}},
		{url: "gs://bucket/x", wantErr: []string{`unknown scheme "gs"`}},
		{url: "file://relative/dir", wantErr: []string{"absolute path"}},
		{url: "file:relative", wantErr: []string{"absolute path"}},
		{url: "file:///x?y=1", wantErr: []string{"no query"}},
		{url: filepath.Join(base, "afile"), wantErr: []string{"must be a directory"}},
	}
	writeFile(t, filepath.Join(base, "afile"), []byte("x"))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			s, err := Open(tt.url)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Open succeeded: %v", s)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d := s.(*Dir)
			if d.Path() != tt.wantDir {
				t.Errorf("Path = %s, want %s", d.Path(), tt.wantDir)
			}
			if fi, err := os.Stat(tt.wantDir); err != nil || !fi.IsDir() {
				t.Errorf("directory not created: %v", err)
			}
			again, err := Open(s.String())
			if err != nil || again.String() != s.String() {
				t.Errorf("Open(%s) = %v, %v; want the same store", s, again, err)
			}
		})
	}
}

func TestOpenRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s, err := Open("runs/ckpt")
	if err != nil {
		t.Fatal(err)
	}
	if want := "file://" + filepath.ToSlash(filepath.Join(dir, "runs", "ckpt")); s.String() != want {
		t.Errorf("String = %s, want %s", s, want)
	}
}

// Loads, verifies, lists and Latest calls run concurrently with each other
// and with saves of other checkpoints (run with -race).
func TestConcurrentReads(t *testing.T) {
	forEachStore(t, testConcurrentReads)
}

func testConcurrentReads(t *testing.T, newStore func(*testing.T) fixture) {
	ctx := context.Background()
	d := newStore(t)
	cs := []*Checkpoint{ck("a", 1), ck("b", 2), ck("c", 3)}
	save(t, d, cs...)
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				c := cs[(g+i)%len(cs)]
				got, err := d.Load(ctx, c.Name)
				if err != nil {
					errs <- err
					return
				}
				for name, data := range c.Parts {
					if !bytes.Equal(got.Parts[name], data) {
						errs <- fmt.Errorf("%s/%s differs", c.Name, name)
						return
					}
				}
				if err := d.Verify(ctx, c.Name); err != nil {
					errs <- err
					return
				}
				if _, warnings, err := d.Latest(ctx); err != nil || len(warnings) != 0 {
					errs <- fmt.Errorf("Latest: %v %v", warnings, err)
					return
				}
				if _, err := d.List(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 5 {
			if err := d.Save(ctx, ck(fmt.Sprintf("n%d", i), int64(10+i))); err != nil {
				errs <- err
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
