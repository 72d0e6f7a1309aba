package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tinct/tinct/internal/miniotest"
)

// The S3 store also runs the shared tests in checkpoint_test.go (see
// forEachStore); these are the S3-only ones.

// Errors found before any request: no server needed.
func TestOpenS3Offline(t *testing.T) {
	tests := []struct {
		name, url string
		opt       Options
		key, sec  string
		wantErr   []string
	}{
		{name: "no credentials", url: "s3://bkt/p", wantErr: []string{"no S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set", "bucket bkt"}},
		{name: "no secret", url: "s3://bkt/p", key: "k", wantErr: []string{"no S3 credentials: AWS_SECRET_ACCESS_KEY is not set", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"}},
		{name: "no key", url: "s3://bkt/p", sec: "s", wantErr: []string{"no S3 credentials: AWS_ACCESS_KEY_ID is not set"}},
		{name: "endpoint scheme", url: "s3://bkt/p", key: "k", sec: "s", opt: Options{S3Endpoint: "ftp://host"}, wantErr: []string{`scheme "ftp" is not http or https`}},
		{name: "endpoint path", url: "s3://bkt/p", key: "k", sec: "s", opt: Options{S3Endpoint: "host:9000/minio"}, wantErr: []string{"give host[:port]"}},
		{name: "bucket name", url: "s3://a_b/p", key: "k", sec: "s", wantErr: []string{`bucket name "a_b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", tt.key)
			t.Setenv("AWS_SECRET_ACCESS_KEY", tt.sec)
			s, err := OpenWith(tt.url, tt.opt)
			if err == nil {
				t.Fatalf("OpenWith succeeded: %v", s)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestEnvOptions(t *testing.T) {
	t.Setenv(EnvS3Endpoint, "minio:9000")
	t.Setenv(EnvS3Region, "eu-1")
	t.Setenv(EnvS3Insecure, "")
	if got, want := EnvOptions(), (Options{S3Endpoint: "minio:9000", S3Secure: true, S3Region: "eu-1"}); got != want {
		t.Errorf("EnvOptions = %+v, want %+v", got, want)
	}
	t.Setenv(EnvS3Insecure, "1")
	if EnvOptions().S3Secure {
		t.Errorf("%s=1 leaves TLS on", EnvS3Insecure)
	}
}

// Wrong credentials, a missing bucket and a TLS mismatch fail Open with
// advice.
func TestOpenS3Errors(t *testing.T) {
	srv := sharedMinio(t)
	tests := []struct {
		name     string
		url      string
		key, sec string
		secure   bool
		code     string // S3 error code, if any
		wantErr  []string
	}{
		{name: "wrong secret", url: "s3://" + testBucket + "/x", key: minioUser, sec: "not-the-secret",
			code: "SignatureDoesNotMatch", wantErr: []string{"AWS_SECRET_ACCESS_KEY is not the secret key of AWS_ACCESS_KEY_ID " + minioUser}},
		{name: "wrong key", url: "s3://" + testBucket + "/x", key: "nobody", sec: minioPass,
			code: "InvalidAccessKeyId", wantErr: []string{"knows no access key nobody: check AWS_ACCESS_KEY_ID"}},
		{name: "missing bucket", url: "s3://no-such-bucket/x", key: minioUser, sec: minioPass,
			code: "NoSuchBucket", wantErr: []string{"bucket no-such-bucket does not exist at http://" + srv.Addr, "does not create buckets"}},
		{name: "TLS to a plain HTTP server", url: "s3://" + testBucket + "/x", key: minioUser, sec: minioPass, secure: true,
			wantErr: []string{"speaks plain HTTP: set TINCT_S3_INSECURE=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", tt.key)
			t.Setenv("AWS_SECRET_ACCESS_KEY", tt.sec)
			s, err := OpenWith(tt.url, Options{S3Endpoint: srv.Addr, S3Secure: tt.secure})
			if err == nil {
				t.Fatalf("OpenWith succeeded: %v", s)
			}
			if !strings.HasPrefix(err.Error(), "open checkpoint store "+tt.url+": ") {
				t.Errorf("error %q does not name the store", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			t.Log(err)
			if tt.code != "" && s3Code(err) != tt.code {
				t.Errorf("error %q: S3 code %q, want %q", err, s3Code(err), tt.code)
			}
		})
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.BucketExists(context.Background(), "no-such-bucket"); ok || err != nil {
		t.Errorf("Open created the missing bucket (%v, %v)", ok, err)
	}
}

// Open reads the endpoint, TLS and credentials from the environment, and
// the store's URL opens the same store again.
func TestOpenS3FromEnv(t *testing.T) {
	srv := sharedMinio(t)
	t.Setenv("AWS_ACCESS_KEY_ID", minioUser)
	t.Setenv("AWS_SECRET_ACCESS_KEY", minioPass)
	t.Setenv(EnvS3Region, "")
	url := fmt.Sprintf("s3://%s/env/t%04d", testBucket, s3Stores.Add(1))
	for _, env := range []struct{ endpoint, insecure string }{
		{srv.Addr, "1"},
		{"http://" + srv.Addr, ""}, // the scheme overrides the TLS default
	} {
		t.Run(env.endpoint, func(t *testing.T) {
			t.Setenv(EnvS3Endpoint, env.endpoint)
			t.Setenv(EnvS3Insecure, env.insecure)
			s, err := Open(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			if s.String() != url {
				t.Errorf("String = %s, want %s", s, url)
			}
			again, err := Open(s.String())
			if err != nil || again.String() != url {
				t.Fatalf("Open(%s) = %v, %v", s, again, err)
			}
			c := ck("epoch-000001", 1)
			save(t, s, c)
			got, err := again.Load(context.Background(), c.Name)
			if err != nil {
				t.Fatal(err)
			}
			sameCheckpoint(t, got, c)
		})
	}
}

// The keys mirror the directory store's files, and the manifest and the
// latest pointer are byte for byte the same.
func TestS3Layout(t *testing.T) {
	s := newS3(t)
	d := dirFixture{newDir(t)}
	c := ck("epoch-000050", 50)
	save(t, s, c)
	save(t, d, c)
	var want []string
	for p := range c.Parts {
		want = append(want, c.Name+"/"+p)
	}
	want = append(want, c.Name+"/manifest.json", "latest")
	slices.Sort(want)
	if got := s.keys(t, ""); !slices.Equal(got, want) {
		t.Errorf("keys = %q\nwant %q", got, want)
	}
	if !strings.HasPrefix(s.prefix, "t") || s.String() != "s3://"+testBucket+"/"+strings.TrimSuffix(s.prefix, "/") {
		t.Errorf("prefix %q, String %s", s.prefix, s)
	}
	for _, key := range []string{"latest", c.Name + "/manifest.json"} {
		if got, want := s.readRaw(t, key), d.readRaw(t, key); !bytes.Equal(got, want) {
			t.Errorf("%s differs from the directory store's:\n%s\nwant\n%s", key, got, want)
		}
	}
}

// A store may live at the top of a bucket.
func TestS3BucketRoot(t *testing.T) {
	srv := sharedMinio(t)
	const bucket = "tinct-root"
	if err := srv.MakeBucket(bucket); err != nil {
		t.Fatal(err)
	}
	s := s3Fixture{srv.open(t, bucket)}
	if s.String() != "s3://"+bucket || s.prefix != "" {
		t.Errorf("String %s, prefix %q", s, s.prefix)
	}
	ctx := context.Background()
	a := ck("a", 1)
	save(t, s, a)
	if got := s.keys(t, ""); len(got) != len(a.Parts)+2 || !slices.Contains(got, "a/manifest.json") || !slices.Contains(got, "latest") {
		t.Errorf("keys = %q", got)
	}
	got, warnings, err := s.Latest(ctx)
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Latest = %v, %v", warnings, err)
	}
	sameCheckpoint(t, got, a)
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if !s.empty(t) {
		t.Errorf("left after deleting the only checkpoint: %q", s.keys(t, ""))
	}
}

// Objects under a name without a manifest are what a save cut short leaves
// (an S3 store cannot stage a save out of sight as a directory store does).
// They are not a checkpoint, Delete refuses them, and a save of that name
// replaces them.
func TestS3SaveOverLeftovers(t *testing.T) {
	ctx := context.Background()
	s := newS3(t)
	save(t, s, ck("a", 1))
	s.writeRaw(t, "b/weights.safetensors", []byte("half"))
	s.writeRaw(t, "b/stray.bin", []byte("x"))
	if l := listNames(t, s); !slices.Equal(l, []string{"a"}) {
		t.Errorf("List = %v", l)
	}
	if got, warnings, err := s.Latest(ctx); err != nil || got.Name != "a" || len(warnings) != 0 {
		t.Errorf("Latest = %v, %v, %v; want a", got, warnings, err)
	}
	if err := s.Delete(ctx, "b"); err == nil || !strings.Contains(err.Error(), "is not a checkpoint (no manifest.json)") {
		t.Errorf("Delete(leftovers) = %v, want a refusal", err)
	}
	b := ck("b", 2)
	save(t, s, b)
	got, err := s.Load(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	sameCheckpoint(t, got, b)
	if s.exists(t, "b/stray.bin") {
		t.Error("b/stray.bin survived the save of b")
	}
	if h := s.leftovers(t); len(h) != 0 {
		t.Errorf("leftovers: %v", h)
	}
}

// bigCheckpoint has a part large enough for a multipart upload between two
// small ones (parts upload in name order).
func bigCheckpoint(name string, step int64) *Checkpoint {
	return &Checkpoint{Name: name, Step: step, Time: t0.Add(time.Duration(step) * time.Second), Parts: map[string][]byte{
		"a-state.json":          []byte(fmt.Sprintf(`{"step":%d}`, step)),
		"b-weights.safetensors": blob(int(step), 40<<20),
		"c-config.yaml":         []byte("lr: 2e-4\n"),
	}}
}

// waitStalled waits until the proxy holds back an upload, failing if the
// save ends first.
func waitStalled(t *testing.T, p *stallProxy, errc <-chan error) {
	t.Helper()
	select {
	case <-p.stalled:
	case err := <-errc:
		t.Fatalf("Save returned before its upload stalled: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the upload did not reach the proxy's limit within 30s")
	}
}

// A cancel stops a save in the middle of an upload (the network stalls, as
// a hung connection would); the store is as before, and the parts already
// uploaded are removed. Cutting short a save that replaces a checkpoint of
// the same name loses that checkpoint (its manifest goes first), and Latest
// falls back with a warning.
func TestS3SaveCanceledMidUpload(t *testing.T) {
	srv := sharedMinio(t)
	path := fmt.Sprintf("%s/cancel/t%04d", testBucket, s3Stores.Add(1))
	direct := s3Fixture{srv.open(t, path)}
	save(t, direct, ck("a", 1), ck("b", 2))

	cancelMidUpload := func(t *testing.T, c *Checkpoint) {
		t.Helper()
		p := newStallProxy(t, srv.Addr)
		s := openS3At(t, p.addr(), path)
		p.limit.Store(1 << 20)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- s.Save(ctx, c) }()
		waitStalled(t, p, errc)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "upload part b-weights.safetensors") {
				t.Errorf("Save = %v, want context.Canceled in the upload of b-weights.safetensors", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Save did not return within 10s of the cancel")
		}
		p.close()
	}

	t.Run("new", func(t *testing.T) {
		cancelMidUpload(t, bigCheckpoint("c", 3))
		if keys := direct.keys(t, "c/"); len(keys) != 0 {
			t.Errorf("a canceled save left %q", keys)
		}
		// (MinIO lists the multipart uploads of one key only.)
		for up := range direct.client.ListIncompleteUploads(context.Background(), testBucket, direct.prefix+"c/b-weights.safetensors", true) {
			t.Errorf("a canceled save left a multipart upload: %+v", up)
		}
		got, warnings, err := direct.Latest(context.Background())
		if err != nil || got.Name != "b" || len(warnings) != 0 {
			t.Errorf("Latest = %v, %v, %v; want b", got, warnings, err)
		}
		if l := listNames(t, direct); !slices.Equal(l, []string{"b", "a"}) {
			t.Errorf("List = %v", l)
		}
	})
	t.Run("replacing", func(t *testing.T) {
		cancelMidUpload(t, bigCheckpoint("b", 4))
		if l := listNames(t, direct); !slices.Equal(l, []string{"a"}) {
			t.Errorf("List = %v", l)
		}
		got, warnings, err := direct.Latest(context.Background())
		if err != nil || got.Name != "a" || len(warnings) != 1 || !strings.Contains(warnings[0].Error(), "checkpoint b: manifest.json: missing") {
			t.Errorf("Latest = %v, %q, %v; want a, warning that b is incomplete", got, warnings, err)
		}
		save(t, direct, ck("b", 2))
		if got, warnings, err := direct.Latest(context.Background()); err != nil || got.Name != "b" || len(warnings) != 0 {
			t.Errorf("Latest after saving b again = %v, %v, %v; want b", got, warnings, err)
		}
		if h := direct.leftovers(t); len(h) != 0 {
			t.Errorf("leftovers: %v", h)
		}
	})
}

// The server dies in the middle of an upload. Restarted on the same data,
// it still has the previous checkpoints intact, latest still names the
// last complete one, and the part that was uploaded is not a checkpoint.
func TestS3ServerKilledMidUpload(t *testing.T) {
	bin := miniotest.Binary(t) // skips the test without one (fails it when $CI is set)
	data := t.TempDir()
	srv, err := startMinio(bin, data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.MakeBucket("crash"); err != nil {
		t.Fatal(err)
	}
	p := newStallProxy(t, srv.Addr)
	s := openS3At(t, p.addr(), "crash/run")
	// One try per request: the server is gone and will not come back.
	s.client, err = minio.New(p.addr(), &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPass, ""), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, b := ck("a", 1), ck("b", 2)
	save(t, s, a, b)

	ctx := context.Background()
	c := bigCheckpoint("c", 3)
	p.limit.Store(1 << 20)
	errc := make(chan error, 1)
	go func() { errc <- s.Save(ctx, c) }()
	waitStalled(t, p, errc)
	srv.Stop() // SIGKILL, in the middle of b-weights.safetensors
	p.close()
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "upload part b-weights.safetensors") {
			t.Errorf("Save = %v, want a failed upload of b-weights.safetensors", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Save did not fail within 60s of the server's death")
	}

	srv2, err := startMinio(bin, data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Stop)
	s2 := s3Fixture{openS3At(t, srv2.Addr, "crash/run")}
	if !s2.exists(t, "c/a-state.json") {
		t.Error("the part uploaded before the crash is not on the server: the test did not cut the save short where it means to")
	}
	got, warnings, err := s2.Latest(ctx)
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Latest = %v, %v", warnings, err)
	}
	sameCheckpoint(t, got, b)
	if l := readLatest(t, s2); l != "b" {
		t.Errorf("latest = %q, want b", l)
	}
	if l := listNames(t, s2); !slices.Equal(l, []string{"b", "a"}) {
		t.Errorf("List = %v", l)
	}
	if _, err := s2.Load(ctx, "c"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "manifest.json: missing") {
		t.Errorf("Load(c) = %v, want an incomplete checkpoint", err)
	}
	for _, c := range []*Checkpoint{a, b} {
		if err := s2.Verify(ctx, c.Name); err != nil {
			t.Error(err)
		}
	}

	// Saving it again completes it (a multipart upload, end to end).
	save(t, s2, c)
	got, err = s2.Load(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	sameCheckpoint(t, got, c)
	if l := readLatest(t, s2); l != "c" {
		t.Errorf("latest = %q, want c", l)
	}
}

// An unreachable server is reported as such, and fast with no retries.
func TestS3Unreachable(t *testing.T) {
	addr, err := miniotest.FreeAddr() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4("k", "s", ""), Region: "us-east-1", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := &S3{client: client, bucket: "bkt", prefix: "p/", endpoint: "http://" + addr}
	ctx := context.Background()
	want := "cannot reach the S3 server at http://" + addr + ": check TINCT_S3_ENDPOINT"
	if _, err := s.List(ctx); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("List = %v, want %q", err, want)
	}
	if err := s.Save(ctx, ck("a", 1)); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Save = %v, want %q", err, want)
	}
	if _, _, err := s.Latest(ctx); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Latest = %v, want %q", err, want)
	}
}

// TestCredentialsFromFiles: AWS_ACCESS_KEY_ID_FILE and
// AWS_SECRET_ACCESS_KEY_FILE (container secrets) stand in for the
// variables; a missing file is named. (internal/s3's TestEnvOrFile checks
// what is read from them.)
func TestCredentialsFromFiles(t *testing.T) {
	dir := t.TempDir()
	key, sec := dir+"/key", dir+"/secret"
	for f, v := range map[string]string{key: "file-key\n", sec: "file-secret\n"} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_ACCESS_KEY_ID_FILE", key)
	t.Setenv("AWS_SECRET_ACCESS_KEY_FILE", sec)
	if _, err := OpenWith("s3://bkt/p", Options{S3Endpoint: "127.0.0.1:1"}); err != nil && strings.Contains(err.Error(), "no S3 credentials") {
		t.Errorf("credentials in files were not used: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY_FILE", dir+"/missing")
	if _, err := OpenWith("s3://bkt/p", Options{S3Endpoint: "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY_FILE") {
		t.Errorf("missing secret file: %v", err)
	}
}
