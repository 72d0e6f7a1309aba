package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/track"
)

// photos writes n small colour images (and one corrupt file) to a folder.
func photos(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, 40, 40))
		for y := range 40 {
			for x := range 40 {
				img.Set(x, y, color.RGBA{uint8(6 * x), uint8(6*y + 10*i), uint8(20 * i), 255})
			}
		}
		f, err := os.Create(filepath.Join(dir, "p"+string(rune('a'+i))+".png"))
		if err != nil {
			t.Fatal(err)
		}
		png.Encode(f, img)
		f.Close()
	}
	os.WriteFile(filepath.Join(dir, "broken.jpg"), []byte("\xff\xd8\xff not really a jpeg"), 0o644)
	return dir
}

func TestTrainResumeColorizeEval(t *testing.T) {
	src := photos(t, 10)
	out := t.TempDir()
	store := filepath.Join(out, "ckpt")
	common := []string{"train", "dataset=" + src, "image_size=16", "model.widths=[4,8]", "batch_size=4", "val_images=2", "test_images=2",
		"sample_every=1", "sample_images=2", "sample_steps=2", "checkpoint_every=1", "output_dir=" + out, "store=" + store, "ema.decay=0.5"}
	if o, err := run(t, append(common, "epochs=2")...); err != nil {
		t.Fatalf("train: %v\n%s", err, o)
	}
	s, _ := checkpoint.Open(store)
	list, err := s.List(t.Context())
	// 10 images: 2 validation, 2 test, 6 training = 1 step of 4 per epoch
	if err != nil || len(list) != 2 || list[0].Step != 2 {
		t.Fatalf("checkpoints after 2 epochs: %+v %v", list, err)
	}
	// resume continues from the newest checkpoint to epoch 3
	if o, err := run(t, append(common, "epochs=3", "resume=true")...); err != nil {
		t.Fatalf("resume: %v\n%s", err, o)
	}
	list, _ = s.List(t.Context())
	if list[0].Epoch != 3 {
		t.Fatalf("after resume the newest checkpoint is at epoch %d, want 3", list[0].Epoch)
	}
	runs, _ := filepath.Glob(filepath.Join(out, "20*"))
	if len(runs) != 2 {
		t.Fatalf("run directories %v, want one per run", runs)
	}
	for _, f := range []string{"config.yaml", "metrics.jsonl", "colorized.png", "images"} {
		if _, err := os.Stat(filepath.Join(runs[len(runs)-1], f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
	evs, _ := filepath.Glob(filepath.Join(runs[0], "events.out.tfevents.*"))
	if len(evs) != 1 {
		t.Fatalf("event files %v", evs)
	}
	if events, err := track.ReadEvents(evs[0]); err != nil || len(events) < 5 {
		t.Fatalf("event file: %d events, %v", len(events), err)
	}
	// colorize a photo with the checkpoint
	col := filepath.Join(out, "col")
	if o, err := run(t, "colorize", filepath.Join(src, "pa.png"), "--checkpoint", store, "--steps", "10", "--samples", "2", "--out", col); err != nil {
		t.Fatalf("colorize: %v\n%s", err, o)
	}
	// the network's input and the model-size samples at 16², the results at
	// the photo's own size (--full-res, the default)
	for f, width := range map[string]int{"pa-gray.png": 16, "pa-1-model.png": 16, "pa-2-model.png": 16, "pa-1.png": 40, "pa-2.png": 40} {
		fh, err := os.Open(filepath.Join(col, f))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil || img.Bounds().Dx() != width {
			t.Fatalf("%s: %v %v, want %d wide", f, err, img.Bounds(), width)
		}
	}
	if _, err := run(t, "colorize", filepath.Join(src, "broken.jpg"), "--checkpoint", store, "--out", col); err == nil || !strings.Contains(err.Error(), "not a PNG or JPEG") {
		t.Fatalf("colorize of a corrupt file: %v", err)
	}
	// inputs are checked before the checkpoint is loaded; the good ones
	// are colorized, the bad ones reported
	notes := filepath.Join(out, "notes.txt")
	if err := os.WriteFile(notes, []byte("not a photo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "colorize", notes, filepath.Join(out, "missing.jpg"), "--checkpoint", filepath.Join(out, "no-such-store")); err == nil || !strings.Contains(err.Error(), "nothing to colorize") || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("colorize of bad inputs only: %v", err)
	}
	col2 := filepath.Join(out, "col2")
	_, err = run(t, "colorize", notes, filepath.Join(src, "pa.png"), "--checkpoint", store, "--steps", "10", "--out", col2)
	if err == nil || !strings.Contains(err.Error(), "colorized 1 of 2") || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("colorize of a good and a bad input: %v", err)
	}
	if _, err := os.Stat(filepath.Join(col2, "pa-1.png")); err != nil {
		t.Errorf("the good photo was not colorized: %v", err)
	}
	// eval on the prepared test split
	prepared, _ := filepath.Glob(filepath.Join(out, "prepared", "*"))
	if len(prepared) != 1 {
		t.Fatalf("prepared sets %v", prepared)
	}
	js := filepath.Join(out, "eval.json")
	pic := filepath.Join(out, "eval.png")
	o, err := run(t, "eval", "--checkpoint", store, "--data", prepared[0], "--steps", "2", "--out", js, "--grid", pic)
	if err != nil || !strings.Contains(o, "gray as RGB") {
		t.Fatalf("eval: %v\n%s", err, o)
	}
	if _, err := os.Stat(js); err != nil {
		t.Fatal(err)
	}
	// the picture: 2 test images, rows gray, 4 samples, truth, 16² each
	if b := readPNG(t, pic).Bounds(); b.Dx() != 2*16+2 || b.Dy() != 6*16+5*2 {
		t.Errorf("eval picture is %v, want 2 columns and 6 rows of 16²", b)
	}
	// eval on a folder of photos, prepared on the fly (the corrupt one is skipped)
	o, err = run(t, "eval", "--checkpoint", store, "--data", src, "--steps", "2", "--out", "", "--grid", "")
	if err != nil || !strings.Contains(o, "images of "+src) || !strings.Contains(o, "gray as RGB") {
		t.Fatalf("eval on a folder of photos: %v\n%s", err, o)
	}
	// the live weights, two samples each: a best-of-2 row
	o, err = run(t, "eval", "--checkpoint", store, "--data", src, "--steps", "2", "--samples", "2", "--weights", "live", "--out", "", "--grid", "")
	if err != nil || !strings.Contains(o, "| live weights, 2 steps, luminance kept, best of 2 |") {
		t.Fatalf("eval --weights live --samples 2: %v\n%s", err, o)
	}
	// the EMA network exported as one weights file (its shape and size in
	// its metadata, no flags) colorizes exactly as the checkpoint does
	wfile := filepath.Join(out, "ema.safetensors")
	if o, err := run(t, "model", "export", "--checkpoint", store, "--out", wfile); err != nil || !strings.Contains(o, "wrote "+wfile) {
		t.Fatalf("model export: %v\n%s", err, o)
	}
	same := func(ckpt, dir string) []byte {
		if o, err := run(t, "colorize", filepath.Join(src, "pa.png"), "--checkpoint", ckpt, "--steps", "10", "--full-res=false", "--out", dir); err != nil {
			t.Fatalf("colorize --checkpoint %s: %v\n%s", ckpt, err, o)
		}
		b, err := os.ReadFile(filepath.Join(dir, "pa-1.png"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(same(store, filepath.Join(out, "c1")), same(wfile, filepath.Join(out, "c2"))) {
		t.Error("the exported weights colorize otherwise than their checkpoint")
	}
}

// TestColorizeDemoModel: with no --checkpoint, colorize uses the bundled
// demo model: a fresh clone colorizes a photo without training.
func TestColorizeDemoModel(t *testing.T) {
	dir := t.TempDir()
	photo := filepath.Join(dir, "photo.png")
	writePNG(t, photo, gradient(96, 64), 0)
	out := filepath.Join(dir, "out")
	if o, err := run(t, "colorize", photo, "--steps", "10", "--out", out); err != nil {
		t.Fatalf("colorize without --checkpoint: %v\n%s", err, o)
	}
	img := readPNG(t, filepath.Join(out, "photo-1.png"))
	if img.Bounds() != image.Rect(0, 0, 96, 64) {
		t.Fatalf("photo-1.png is %v, want the photo's 96×64", img.Bounds())
	}
	coloured := 0
	for y := range 64 {
		for x := range 96 {
			r, g, b, _ := img.At(x, y).RGBA()
			if r != g || g != b {
				coloured++
			}
		}
	}
	if coloured < 96*64/2 {
		t.Errorf("only %d of %d pixels have colour", coloured, 96*64)
	}
	if model := readPNG(t, filepath.Join(out, "photo-1-model.png")); model.Bounds().Dx() != 64 {
		t.Errorf("photo-1-model.png is %v, want the demo model's 64 wide", model.Bounds())
	}
}

func TestTrainBadInput(t *testing.T) {
	photo := filepath.Join(photos(t, 1), "pa.png")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "lrr=1"}, `unknown key "lrr"`},
		{[]string{"train", "ema.buffers=median"}, "must be one of copy, average"},
		{[]string{"train", "dataset=/nonexistent/photos", "output_dir=" + t.TempDir()}, "/nonexistent/photos"},
		{[]string{"train", "--config", "/nonexistent.yaml"}, "config file"},
		{[]string{"colorize", photo, "--checkpoint", t.TempDir()}, "no valid checkpoint"},
		{[]string{"colorize", "x.png", "--checkpoint", t.TempDir(), "--steps", "5"}, "--steps 5: must be 10 to 100"},
		{[]string{"colorize", "x.png", "--checkpoint", t.TempDir(), "--samples", "9"}, "--samples 9: must be 1 to 8"},
	} {
		if _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

// TestTrainSignal: SIGINT during training saves a checkpoint where the run
// is and returns without error; resume=true continues from it.
func TestTrainSignal(t *testing.T) {
	src := photos(t, 8)
	out := t.TempDir()
	store := filepath.Join(out, "ckpt")
	args := []string{"train", "dataset=" + src, "image_size=16", "model.widths=[4,8]", "batch_size=2", "val_images=1", "test_images=1",
		"sample_every=0", "checkpoint_every=1000", "epochs=1000", "output_dir=" + out, "store=" + store}
	done := make(chan error, 1)
	go func() {
		_, err := run(t, args...)
		done <- err
	}()
	// wait until training has committed a step (its metrics reach the file
	// within the writer's flush interval), then interrupt
	deadline := time.Now().Add(60 * time.Second)
	for {
		runs, _ := filepath.Glob(filepath.Join(out, "20*", "metrics.jsonl"))
		if len(runs) == 1 {
			if b, _ := os.ReadFile(runs[0]); strings.Contains(string(b), "loss/step") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("training wrote no step in 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("interrupted train returned %v, want nil", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("train did not stop on SIGINT")
	}
	s, _ := checkpoint.Open(store)
	list, err := s.List(t.Context())
	if err != nil || len(list) != 1 || list[0].Step < 1 {
		t.Fatalf("checkpoints after SIGINT: %+v %v", list, err)
	}
}

// preparedWithFlippedByte prepares 10 photos at 16² (2 validation, 2 test)
// in out/data and flips one byte in the middle of its shard named shard.
func preparedWithFlippedByte(t *testing.T, out, shard string) (data, path string) {
	t.Helper()
	data = filepath.Join(out, "data")
	if o, err := run(t, "data", "prepare", photos(t, 10), "--out", data, "--image-size", "16", "--val", "2", "--test", "2"); err != nil {
		t.Fatalf("prepare: %v\n%s", err, o)
	}
	path = filepath.Join(data, shard)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return data, path
}

// TestTrainDamagedShard: tinct train on a prepared set with a byte flipped
// in a shard stops with an error naming the file, before training.
func TestTrainDamagedShard(t *testing.T) {
	out := t.TempDir()
	data, shard := preparedWithFlippedByte(t, out, "train-00000.bin")
	_, err := run(t, "train", "dataset="+data, "image_size=16", "model.widths=[4,8]", "batch_size=4", "epochs=1", "sample_every=0",
		"output_dir="+out, "store="+filepath.Join(out, "ckpt"))
	if err == nil || !strings.Contains(err.Error(), shard) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("train on a damaged shard: %v, want an error naming %s", err, shard)
	}
	if s, _ := checkpoint.Open(filepath.Join(out, "ckpt")); s != nil {
		if list, _ := s.List(t.Context()); len(list) != 0 {
			t.Errorf("a damaged set trained: checkpoints %+v", list)
		}
	}
}

// TestTrainDamagedValidationSplit: a damaged validation shard stops a run
// whose configuration asks for sample grids, with an error naming the file
// (it used to say only "no validation images: sample grids are skipped");
// with sample_every=0 the run does not need the split and goes on.
func TestTrainDamagedValidationSplit(t *testing.T) {
	out := t.TempDir()
	data, shard := preparedWithFlippedByte(t, out, "val-00000.bin")
	args := []string{"train", "dataset=" + data, "image_size=16", "model.widths=[4,8]", "batch_size=4", "epochs=1", "sample_steps=2",
		"output_dir=" + out, "store=" + filepath.Join(out, "ckpt")}
	_, err := run(t, append(args, "sample_every=1")...)
	if err == nil || !strings.Contains(err.Error(), shard) || !strings.Contains(err.Error(), "validation") {
		t.Fatalf("train with sample grids on a damaged validation split: %v, want an error naming %s", err, shard)
	}
	if _, err := run(t, append(args, "sample_every=0", "store="+filepath.Join(out, "ckpt2"))...); err != nil {
		t.Fatalf("train without sample grids on a damaged validation split: %v", err)
	}
}

// TestTrainResumeModes: resume=true needs a valid checkpoint (an empty
// store, say a typo in its path, is an error); resume=auto starts afresh
// only from an empty store; a store of damaged checkpoints stops both with
// an error naming each, and is left as it was.
func TestTrainResumeModes(t *testing.T) {
	_, store, train := tinyTraining(t, "keep_last=3")
	if err := train("epochs=1", "resume=true"); err == nil || !strings.Contains(err.Error(), "resume=true") || !strings.Contains(err.Error(), store) {
		t.Fatalf("resume=true from an empty store: %v, want an error naming the store", err)
	}
	if err := train("epochs=2", "resume=auto"); err != nil {
		t.Fatalf("resume=auto from an empty store: %v", err)
	}
	s, _ := checkpoint.Open(store)
	if list, _ := s.List(t.Context()); len(list) != 2 {
		t.Fatalf("checkpoints after 2 epochs: %+v", list)
	}
	if err := train("epochs=3", "resume=auto"); err != nil {
		t.Fatalf("resume=auto: %v", err)
	}
	list, _ := s.List(t.Context())
	if len(list) != 3 || list[0].Epoch != 3 {
		t.Fatalf("after resume=auto to epoch 3: %+v", list)
	}
	for _, in := range list {
		part := filepath.Join(store, in.Name, "weights.safetensors")
		b, _ := os.ReadFile(part)
		b[len(b)/2] ^= 1
		os.WriteFile(part, b, 0o644)
	}
	for _, mode := range []string{"true", "auto"} {
		err := train("epochs=4", "resume="+mode)
		if err == nil {
			t.Fatalf("resume=%s over damaged checkpoints trained", mode)
		}
		for _, in := range list {
			if !strings.Contains(err.Error(), in.Name) {
				t.Errorf("resume=%s: %v\nwant it to name %s", mode, err, in.Name)
			}
		}
	}
	if after, _ := s.List(t.Context()); len(after) != len(list) {
		t.Errorf("checkpoints after the refused resumes: %+v, want the %d damaged ones kept", after, len(list))
	}
}

// TestRefusedRunLeavesNothing: a run refused for its data (splits that take
// every image) or for its store (resume=true over an empty one) names what
// to change and leaves no run folder and no half-prepared set behind.
func TestRefusedRunLeavesNothing(t *testing.T) {
	src := photos(t, 5)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"val_images=1000", "test_images=1000"}, []string{"val_images=1000", "test_images=1000", "configs/sample.yaml"}},
		{[]string{"val_images=1", "test_images=1", "resume=true"}, []string{"resume=true", "holds no checkpoint"}},
	} {
		out := t.TempDir()
		args := append([]string{"train", "dataset=" + src, "image_size=8", "model.widths=[4,8]", "output_dir=" + out, "store=" + filepath.Join(out, "ckpt")}, tc.args...)
		_, err := run(t, args...)
		if err == nil {
			t.Fatalf("%v: no error", tc.args)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v does not say %q", tc.args, err, w)
			}
		}
		entries, _ := os.ReadDir(out)
		for _, e := range entries {
			if e.Name() != "ckpt" {
				t.Errorf("%v: left %s behind", tc.args, filepath.Join(out, e.Name()))
			}
		}
	}
}

// TestTrainStoreBelongsToOneRun: a store holds one run. resume=false (the
// default) over a store that holds checkpoints stops, before it makes
// anything, with an error naming the store, the run found and its newest
// checkpoint and both ways on, and leaves the store as it was (it used to
// train, write over the checkpoint of the same name and move latest);
// overwrite_store=true starts a new run there on purpose, after deleting
// the old run's checkpoints; resume=true continues the run of the newest
// checkpoint, under its run id.
func TestTrainStoreBelongsToOneRun(t *testing.T) {
	out, store, train := tinyTraining(t, "keep_last=0")
	s, _ := checkpoint.Open(store)
	list := func() []checkpoint.Info {
		t.Helper()
		l, err := s.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	runDirs := func() int {
		dirs, _ := filepath.Glob(filepath.Join(out, "20*"))
		return len(dirs)
	}
	// 6 training images, batch 4: one step an epoch
	if err := train("epochs=2"); err != nil {
		t.Fatalf("first run: %v", err)
	}
	first := list()
	if len(first) != 2 || first[0].Run == "" || first[1].Run != first[0].Run {
		t.Fatalf("first run's checkpoints %+v, want 2 of one run", first)
	}
	old := first[0].Run

	err := train("epochs=1")
	if err == nil {
		t.Fatal("resume=false over a store of another run's checkpoints trained")
	}
	for _, want := range []string{"resume=false", store, "run " + old, "step-000000002 (step 2, epoch 2, saved ", "resume=true", "overwrite_store=true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nwant it to contain %q", err, want)
		}
	}
	if after := list(); len(after) != 2 || after[0] != first[0] || after[1] != first[1] {
		t.Fatalf("checkpoints after the refused run %+v, want them as they were: %+v", after, first)
	}
	if l, _ := os.ReadFile(filepath.Join(store, "latest")); strings.TrimSpace(string(l)) != "step-000000002" {
		t.Errorf("latest after the refused run: %q", l)
	}
	if n := runDirs(); n != 1 {
		t.Errorf("%d run folders after the refused run, want the first run's only", n)
	}

	// on purpose: the old run's checkpoints are deleted, the store holds
	// the new run only
	if err := train("epochs=1", "overwrite_store=true"); err != nil {
		t.Fatalf("overwrite_store=true: %v", err)
	}
	second := list()
	if len(second) != 1 || second[0].Name != "step-000000001" || second[0].Run == "" || second[0].Run == old {
		t.Fatalf("checkpoints after overwrite_store=true %+v, want the new run's step 1 only (old run %s)", second, old)
	}
	// resume=true continues it, under its id
	if err := train("epochs=2", "resume=true"); err != nil {
		t.Fatalf("resume=true: %v", err)
	}
	if third := list(); len(third) != 2 || third[0].Run != second[0].Run || third[1].Run != second[0].Run || third[0].Epoch != 2 {
		t.Fatalf("checkpoints after resume=true %+v, want run %s's steps 1 and 2", third, second[0].Run)
	}
	if err := train("epochs=3", "resume=true", "overwrite_store=true"); err == nil || !strings.Contains(err.Error(), "only with resume=false") {
		t.Fatalf("overwrite_store=true with resume=true: %v", err)
	}
}

// TestTrainHelpNamesOverwriteStore: tinct train --help tells of a store's
// one run and of overwrite_store.
func TestTrainHelpNamesOverwriteStore(t *testing.T) {
	o, err := run(t, "train", "--help")
	if err != nil || !strings.Contains(o, "overwrite_store=true") || !strings.Contains(o, "A store holds one run") {
		t.Fatalf("tinct train --help: %v\n%s", err, o)
	}
}

// tinyTraining prepares 10 generated photos at 16² and returns a folder
// for the runs, the store in it and a tinct train of a tiny network on
// them that checkpoints every epoch, with keys (and then args) added.
func tinyTraining(t *testing.T, keys ...string) (out, store string, train func(args ...string) error) {
	t.Helper()
	out = t.TempDir()
	data := filepath.Join(out, "data")
	if o, err := run(t, "data", "prepare", photos(t, 10), "--out", data, "--image-size", "16", "--val", "2", "--test", "2"); err != nil {
		t.Fatalf("prepare: %v\n%s", err, o)
	}
	store = filepath.Join(out, "ckpt")
	base := append([]string{"train", "dataset=" + data, "image_size=16", "model.widths=[4,8]", "batch_size=4", "sample_every=0",
		"checkpoint_every=1", "output_dir=" + out, "store=" + store}, keys...)
	return out, store, func(args ...string) error {
		t.Helper()
		_, err := run(t, append(slices.Clone(base), args...)...)
		return err
	}
}
