package dataset

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/internal/miniotest"
)

// The remote-dataset tests run against a real MinIO (internal/miniotest,
// the harness the checkpoint tests use); without one they are skipped, or
// fail when $CI is set.

const remoteBucket = "tinct-data"

var minioSrv = miniotest.Shared{Label: "dataset: s3:// datasets"}

func TestMain(m *testing.M) {
	code := m.Run()
	minioSrv.Stop()
	os.Exit(code)
}

var remotePrefixes atomic.Int64

// remoteFixture starts (or reuses) MinIO, points the S3 environment at it
// and returns a fresh URL under the test bucket with its options.
func remoteFixture(t *testing.T) (*miniotest.Server, string, checkpoint.Options) {
	t.Helper()
	srv := minioSrv.Server(t, remoteBucket)
	srv.SetEnv(t)
	url := fmt.Sprintf("s3://%s/sets/t%03d", remoteBucket, remotePrefixes.Add(1))
	return srv, url, checkpoint.EnvOptions()
}

// smallPrepared prepares a set of 12 images at 16² with several shards per
// split.
func smallPrepared(t *testing.T) string {
	t.Helper()
	withShardLimit(t, 3*recordBytes(16))
	src := t.TempDir()
	for k := range 12 {
		writeFile(t, src, fmt.Sprintf("img%02d.png", k), encodePNG(t, pattern(40+k, 36+2*k, k)))
	}
	out := filepath.Join(t.TempDir(), "prepared")
	if _, err := Prepare(context.Background(), PrepareOptions{Source: src, Out: out, ImageSize: 16, Val: 2, Test: 2, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUploadFetch(t *testing.T) {
	srv, url, opt := remoteFixture(t)
	local := smallPrepared(t)
	ctx := context.Background()
	if err := Upload(ctx, local, url, opt); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	st, err := Fetch(ctx, url, cache, opt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadManifest(local)
	if err != nil {
		t.Fatal(err)
	}
	nShards := len(m.allShards())
	if nShards < 4 {
		t.Fatalf("fixture has %d shards, want several", nShards)
	}
	if st.Downloaded != nShards || st.Cached != 0 {
		t.Errorf("first fetch: downloaded %d, cached %d; want %d, 0", st.Downloaded, st.Cached, nShards)
	}
	if want, _ := CacheDir(url, cache); st.Dir != want || !strings.HasPrefix(filepath.Base(st.Dir), "s3-"+remoteBucket+"-sets-t") {
		t.Errorf("fetched into %s, want %s named after the bucket and prefix", st.Dir, want)
	}
	for _, split := range Splits {
		wc, wg := loadAll(t, local, split)
		gc, gg := loadAll(t, st.Dir, split)
		if len(gc) != len(wc) || len(wc) == 0 {
			t.Fatalf("split %s: %d images fetched, %d local", split, len(gc), len(wc))
		}
		for i := range wc {
			if !slices.Equal(wc[i], gc[i]) || !slices.Equal(wg[i], gg[i]) {
				t.Fatalf("split %s image %d differs after the round trip", split, i)
			}
		}
		s, err := Open(st.Dir, split)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Verify(); err != nil {
			t.Error(err)
		}
		s.Close()
	}

	// The second fetch takes every shard from the cache: it still works
	// with the shard objects gone from the store.
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimPrefix(url, "s3://"+remoteBucket+"/") + "/"
	for _, sh := range m.allShards() {
		if err := c.RemoveObject(ctx, remoteBucket, prefix+sh.File, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	st2, err := Fetch(ctx, url, cache, opt)
	if err != nil {
		t.Fatalf("second fetch with the shards gone from the store: %v", err)
	}
	if st2.Dir != st.Dir || st2.Downloaded != 0 || st2.Cached != nShards {
		t.Errorf("second fetch: %+v, want all %d shards cached in %s", st2, nShards, st.Dir)
	}

	// A damaged shard in the cache is downloaded again; with its object
	// gone, the fetch fails naming it.
	bad := m.Splits[SplitTrain].Shards[1].File
	path := filepath.Join(st.Dir, bad)
	data, _ := os.ReadFile(path)
	data[7] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Fetch(ctx, url, cache, opt)
	if err == nil || !strings.Contains(err.Error(), "shard "+bad) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("fetch over a damaged cached shard whose object is gone: %v, want an error naming shard %s as missing", err, bad)
	}
	// Upload again: the damaged cached shard is replaced, the others kept.
	if err := Upload(ctx, local, url, opt); err != nil {
		t.Fatal(err)
	}
	st3, err := Fetch(ctx, url, cache, opt)
	if err != nil {
		t.Fatal(err)
	}
	if st3.Downloaded != 1 || st3.Cached != nShards-1 {
		t.Errorf("fetch after repairing the store: %+v, want 1 downloaded and %d cached", st3, nShards-1)
	}
	s, err := Open(st3.Dir, SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Verify(); err != nil {
		t.Error(err)
	}
}

func TestFetchCorruptShardObject(t *testing.T) {
	srv, url, opt := remoteFixture(t)
	local := smallPrepared(t)
	ctx := context.Background()
	if err := Upload(ctx, local, url, opt); err != nil {
		t.Fatal(err)
	}
	m, _ := ReadManifest(local)
	sh := m.Splits[SplitVal].Shards[0]
	data, err := os.ReadFile(filepath.Join(local, sh.File))
	if err != nil {
		t.Fatal(err)
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimPrefix(url, "s3://"+remoteBucket+"/") + "/" + sh.File
	put := func(b []byte) {
		t.Helper()
		if _, err := c.PutObject(ctx, remoteBucket, key, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	flipped := slices.Clone(data)
	flipped[len(flipped)/2] ^= 0x01
	put(flipped)
	cache := t.TempDir()
	_, err = Fetch(ctx, url, cache, opt)
	if err == nil {
		t.Fatal("fetch of a corrupted shard object succeeded")
	}
	t.Logf("corrupted shard object: %v", err)
	for _, want := range []string{url, "shard " + sh.File, "sha256", "damaged", "tinct data push DIR " + url} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	dir, _ := CacheDir(url, cache)
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
		t.Error("a failed fetch left a manifest in the cache")
	}
	if _, err := os.Stat(filepath.Join(dir, sh.File)); err == nil {
		t.Error("a failed fetch left the corrupt shard in the cache")
	}
	if entries, _ := os.ReadDir(dir); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return strings.Contains(e.Name(), ".tmp-") }) {
		t.Errorf("temporary files left behind: %v", entries)
	}

	put(data[:len(data)-1]) // truncated
	_, err = Fetch(ctx, url, cache, opt)
	if err == nil || !strings.Contains(err.Error(), "shard "+sh.File) || !strings.Contains(err.Error(), "bytes but the manifest says") {
		t.Fatalf("fetch of a truncated shard object: %v", err)
	}

	put(data) // repaired: the shards fetched before are reused
	st, err := Fetch(ctx, url, cache, opt)
	if err != nil {
		t.Fatal(err)
	}
	if st.Downloaded != 1 {
		t.Errorf("fetch after the repair: %+v, want only the repaired shard downloaded", st)
	}
}

func TestFetchErrors(t *testing.T) {
	_, url, opt := remoteFixture(t)
	ctx := context.Background()
	_, err := Fetch(ctx, url, t.TempDir(), opt)
	if err == nil || !strings.Contains(err.Error(), "no manifest.json") || !strings.Contains(err.Error(), "tinct data push DIR "+url) {
		t.Errorf("fetch of an empty prefix: %v", err)
	}
	_, err = Fetch(ctx, "s3://no-such-bucket-x/a", t.TempDir(), opt)
	if err == nil || !strings.Contains(err.Error(), "bucket no-such-bucket-x does not exist") || !strings.Contains(err.Error(), "tinct data push --create-bucket DIR s3://no-such-bucket-x/a") {
		t.Errorf("fetch from a missing bucket: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, err = Fetch(ctx, url, t.TempDir(), opt); err == nil || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") {
		t.Errorf("fetch without credentials: %v", err)
	}
}

func TestEnsureBucket(t *testing.T) {
	_, _, opt := remoteFixture(t)
	ctx := context.Background()
	url := fmt.Sprintf("s3://tinct-made-%d/x", remotePrefixes.Add(1))
	for i, want := range []bool{true, false} {
		created, err := EnsureBucket(ctx, url, opt)
		if err != nil || created != want {
			t.Fatalf("EnsureBucket call %d: created %v, %v; want %v", i+1, created, err, want)
		}
	}
	if err := Upload(ctx, smallPrepared(t), url, opt); err != nil {
		t.Fatal(err)
	}
}

func TestParseRemote(t *testing.T) {
	for _, tt := range []struct {
		url, bucket, prefix, err string
	}{
		{url: "s3://b-1/data", bucket: "b-1", prefix: "data/"},
		{url: "S3://b-1/a/b/", bucket: "b-1", prefix: "a/b/"},
		{url: "s3://b-1", bucket: "b-1"},
		{url: "s3://B_1/x", err: "bucket name"},
		{url: "s3://b-1/a//b", err: "empty"},
		{url: "s3://b-1/a/../b", err: "'..'"},
		{url: "s3://k:s@b-1/a", err: "AWS_ACCESS_KEY_ID"},
		{url: "/local/dir", err: "not an s3://"},
	} {
		b, p, err := parseRemote(tt.url)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %q, %q, %v; want an error with %q", tt.url, b, p, err, tt.err)
			}
			continue
		}
		if err != nil || b != tt.bucket || p != tt.prefix {
			t.Errorf("%s: %q, %q, %v; want %q, %q", tt.url, b, p, err, tt.bucket, tt.prefix)
		}
	}
	a, _ := CacheDir("s3://b-1/a/b", "/c")
	b, _ := CacheDir("s3://b-1/a-b", "/c")
	if a == b || filepath.Dir(a) != "/c" {
		t.Errorf("cache dirs %s and %s: want distinct folders under /c", a, b)
	}
}
