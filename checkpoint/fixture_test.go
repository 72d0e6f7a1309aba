package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"
)

// fixture is a fresh, empty store with raw access to what it stores, to
// damage it the way a crash, a bad disk or a person would. Keys are relative
// to the store's root and use '/': "latest", "epoch-000050/manifest.json".
type fixture interface {
	Store
	Verify(ctx context.Context, name string) error
	noun() string // what a part is kept in: "file" or "object"
	readRaw(t *testing.T, key string) []byte
	writeRaw(t *testing.T, key string, data []byte)
	removeRaw(t *testing.T, key string)     // no error if missing
	removeAllRaw(t *testing.T, name string) // everything under name/
	exists(t *testing.T, key string) bool
	empty(t *testing.T) bool         // nothing stored at all
	leftovers(t *testing.T) []string // what a finished operation should not leave behind
}

// forEachStore runs test against every kind of store: a directory, and an
// S3 bucket on a MinIO server (skipped, or failed under CI, if there is no
// MinIO binary). newStore returns a fresh, empty store.
func forEachStore(t *testing.T, test func(t *testing.T, newStore func(*testing.T) fixture)) {
	t.Run("dir", func(t *testing.T) {
		test(t, func(t *testing.T) fixture { return dirFixture{newDir(t)} })
	})
	t.Run("s3", func(t *testing.T) {
		sharedMinio(t) // skips or fails here, once, rather than in every subtest
		test(t, func(t *testing.T) fixture { return newS3(t) })
	})
}

// expand fills in the parts of an expected message that depend on the
// store: {file} is what parts are kept in, {store} the store's URL.
func expand(f fixture, s string) string {
	return strings.NewReplacer("{file}", f.noun(), "{store}", f.String()).Replace(s)
}

// dirFixture is a directory store.
type dirFixture struct{ *Dir }

func (f dirFixture) noun() string { return "file" }

func (f dirFixture) path(key string) string { return filepath.Join(f.Path(), filepath.FromSlash(key)) }

func (f dirFixture) readRaw(t *testing.T, key string) []byte {
	t.Helper()
	data, err := os.ReadFile(f.path(key))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (f dirFixture) writeRaw(t *testing.T, key string, data []byte) {
	t.Helper()
	writeFile(t, f.path(key), data)
}

func (f dirFixture) removeRaw(t *testing.T, key string) {
	t.Helper()
	if err := os.Remove(f.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

func (f dirFixture) removeAllRaw(t *testing.T, name string) {
	t.Helper()
	if err := os.RemoveAll(f.path(name)); err != nil {
		t.Fatal(err)
	}
}

func (f dirFixture) exists(t *testing.T, key string) bool {
	t.Helper()
	_, err := os.Lstat(f.path(key))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func (f dirFixture) empty(t *testing.T) bool {
	t.Helper()
	entries, err := os.ReadDir(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) == 0
}

func (f dirFixture) leftovers(t *testing.T) []string { return hidden(t, f.Dir) }

// s3Fixture is an S3 store under a prefix of its own in the shared MinIO
// server's bucket.
type s3Fixture struct{ *S3 }

var s3Stores atomic.Int64

// newS3 opens a store under a new prefix in the shared server's bucket.
func newS3(t *testing.T) s3Fixture {
	t.Helper()
	srv := sharedMinio(t)
	return s3Fixture{srv.open(t, fmt.Sprintf("%s/t%04d", testBucket, s3Stores.Add(1)))}
}

func (f s3Fixture) noun() string { return "object" }

func (f s3Fixture) readRaw(t *testing.T, key string) []byte {
	t.Helper()
	data, err := f.get(context.Background(), f.prefix+key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return data
}

func (f s3Fixture) writeRaw(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := f.client.PutObject(context.Background(), f.bucket, f.prefix+key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (f s3Fixture) removeRaw(t *testing.T, key string) {
	t.Helper()
	if err := f.client.RemoveObject(context.Background(), f.bucket, f.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("remove %s: %v", key, err)
	}
}

func (f s3Fixture) removeAllRaw(t *testing.T, name string) {
	t.Helper()
	for _, key := range f.keys(t, name+"/") {
		f.removeRaw(t, key)
	}
}

func (f s3Fixture) exists(t *testing.T, key string) bool {
	t.Helper()
	_, err := f.client.StatObject(context.Background(), f.bucket, f.prefix+key, minio.StatObjectOptions{})
	if err != nil && !isNotFound(err) {
		t.Fatalf("stat %s: %v", key, err)
	}
	return err == nil
}

// keys lists every object under the store's prefix and then under, as keys
// relative to the store.
func (f s3Fixture) keys(t *testing.T, under string) []string {
	t.Helper()
	var keys []string
	for obj := range f.client.ListObjectsIter(context.Background(), f.bucket,
		minio.ListObjectsOptions{Prefix: f.prefix + under, Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("list %s: %v", under, obj.Err)
		}
		keys = append(keys, strings.TrimPrefix(obj.Key, f.prefix))
	}
	return keys
}

func (f s3Fixture) empty(t *testing.T) bool { return len(f.keys(t, "")) == 0 }

// leftovers returns what a Dir would hide under a dot name: objects under a
// checkpoint (a name with a manifest) that its manifest does not list, and
// dot-named entries. Names without a manifest are not checkpoints and are
// not counted (like a Dir's directories without one).
func (f s3Fixture) leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	manifests := map[string]*manifest{}
	for _, key := range f.keys(t, "") {
		name, file, ok := strings.Cut(key, "/")
		if strings.HasPrefix(name, ".") || ok && strings.Contains(file, "/") {
			out = append(out, key)
			continue
		}
		if !ok {
			continue // latest, or a foreign top-level object
		}
		m, seen := manifests[name]
		if !seen {
			if data, err := f.get(context.Background(), f.prefix+name+"/"+manifestFile); err == nil {
				m, _ = decodeManifest(name, data)
			}
			manifests[name] = m
		}
		if m == nil || file == manifestFile {
			continue
		}
		listed := false
		for _, p := range m.Parts {
			listed = listed || p.Name == file
		}
		if !listed {
			out = append(out, key)
		}
	}
	return out
}
