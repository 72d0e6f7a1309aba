package dataset

// Prepared datasets in an S3 bucket: s3://bucket/prefix holds the same
// files as a prepared folder (manifest.json and the shard files) under the
// key prefix. Upload puts a prepared folder there; Fetch copies it into a
// local cache, verified against the manifest, for Open.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/tinct/tinct/internal/atomicfile"
	"github.com/tinct/tinct/internal/s3"
)

// IsRemote reports whether dataset names a dataset in an object store
// (s3://bucket/prefix) rather than a local folder.
func IsRemote(dataset string) bool {
	return len(dataset) >= 5 && strings.EqualFold(dataset[:5], "s3://")
}

// fetchWorkers bounds the shards Fetch downloads (or checks) at once.
const fetchWorkers = 4

// FetchStats says what a fetch did.
type FetchStats struct {
	Dir        string // the local folder, for Open
	Downloaded int    // shards downloaded
	Cached     int    // shards already present and valid
	Bytes      int64  // bytes downloaded (shards)
}

// Fetch copies the prepared dataset at rawURL (s3://bucket/prefix) into
// cacheDir/<name>/, where name is stable for the bucket and prefix (see
// CacheDir), and returns that folder for Open in the stats. Each shard is
// checked against the manifest's size and SHA-256; a shard already in the
// cache with the right content is not downloaded again. Files are written
// under temporary names and renamed into place, the manifest last, so an
// interrupted fetch never leaves a manifest over partial shards.
//
// opt gives the S3 endpoint, TLS and region, as for the checkpoint store
// (checkpoint.Options is the same type; checkpoint.EnvOptions reads
// TINCT_S3_ENDPOINT, TINCT_S3_INSECURE and TINCT_S3_REGION); the
// credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
// AWS_SESSION_TOKEN, if set).
func Fetch(ctx context.Context, rawURL, cacheDir string, opt s3.Options) (FetchStats, error) {
	var stats FetchStats
	r, err := openRemote(rawURL, opt)
	if err != nil {
		return stats, fmt.Errorf("fetch dataset: %w", err)
	}
	fail := func(err error) (FetchStats, error) {
		return stats, fmt.Errorf("fetch dataset %s: %w%s", r, err, r.hint(err))
	}
	dir := filepath.Join(cacheDir, r.cacheName())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	js, err := r.get(ctx, ManifestFile)
	if isNoSuchKey(err) {
		return stats, fmt.Errorf("fetch dataset %s: there is no %s under it: not a prepared dataset, or its upload did not finish; upload a prepared folder there with tinct data push DIR %s", r, ManifestFile, r)
	}
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", ManifestFile, err))
	}
	m, err := parseManifest(js)
	if err != nil {
		return stats, fmt.Errorf("fetch dataset %s: %s: %w", r, ManifestFile, err)
	}
	// A different manifest in the cache is removed first: until the new
	// one is written, the folder is not a dataset.
	manPath := filepath.Join(dir, ManifestFile)
	if old, err := os.ReadFile(manPath); err == nil && string(old) != string(js) {
		if err := os.Remove(manPath); err != nil {
			return fail(err)
		}
	}

	shards := m.allShards()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan ShardInfo)
	)
	for range min(fetchWorkers, len(shards)) {
		wg.Go(func() {
			for sh := range next {
				path := filepath.Join(dir, sh.File)
				if err := verifyFileOnce(path, sh, "it is downloaded again"); err == nil {
					mu.Lock()
					stats.Cached++
					mu.Unlock()
					continue
				}
				err := r.download(ctx, sh, path)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					stats.Downloaded++
					stats.Bytes += sh.Bytes
				}
				mu.Unlock()
			}
		})
	}
	for _, sh := range shards {
		if ctx.Err() != nil {
			break
		}
		next <- sh
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return fail(errors.Join(errs...))
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fail(err)
	}
	if err := atomicfile.Write(manPath, js, ".manifest.json.tmp-"); err != nil {
		return fail(fmt.Errorf("write %s: %w", manPath, err))
	}
	removeStale(dir, m)
	stats.Dir = dir
	return stats, nil
}

// CacheDir returns the folder under cacheDir that Fetch fills for rawURL.
func CacheDir(rawURL, cacheDir string) (string, error) {
	bucket, prefix, err := parseRemote(rawURL)
	if err != nil {
		return "", err
	}
	return filepath.Join(cacheDir, (&remote{bucket: bucket, prefix: prefix}).cacheName()), nil
}

// Upload copies the prepared dataset in localDir to rawURL
// (s3://bucket/prefix), which must be in an existing bucket (see
// EnsureBucket). Every shard is checked against the local manifest first;
// the shards are uploaded, then the manifest, so a reader never sees a
// manifest over missing shards. A manifest already at rawURL is removed
// before anything is replaced. opt is as for Fetch.
func Upload(ctx context.Context, localDir, rawURL string, opt s3.Options) error {
	m, err := ReadManifest(localDir)
	if err != nil {
		return fmt.Errorf("upload dataset: %w", err)
	}
	r, err := openRemote(rawURL, opt)
	if err != nil {
		return fmt.Errorf("upload dataset: %w", err)
	}
	fail := func(err error) error {
		return fmt.Errorf("upload dataset %s to %s: %w%s", localDir, r, err, r.hint(err))
	}
	shards := m.allShards()
	for _, sh := range shards {
		if err := verifyFile(filepath.Join(localDir, sh.File), sh, "run prepare again"); err != nil {
			return fmt.Errorf("upload dataset %s: %w", localDir, err)
		}
	}
	js, err := os.ReadFile(filepath.Join(localDir, ManifestFile))
	if err != nil {
		return fail(err)
	}
	if err := r.client.RemoveObject(ctx, r.bucket, r.key(ManifestFile), minio.RemoveObjectOptions{}); err != nil && !isNoSuchKey(err) {
		return fail(fmt.Errorf("remove the manifest it replaces: %w", err))
	}
	for _, sh := range shards {
		if _, err := r.client.FPutObject(ctx, r.bucket, r.key(sh.File), filepath.Join(localDir, sh.File),
			minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
			return fail(fmt.Errorf("upload shard %s: %w", sh.File, err))
		}
	}
	if _, err := r.client.PutObject(ctx, r.bucket, r.key(ManifestFile), strings.NewReader(string(js)), int64(len(js)),
		minio.PutObjectOptions{ContentType: "application/json"}); err != nil {
		return fail(fmt.Errorf("upload %s: %w", ManifestFile, err))
	}
	return nil
}

// EnsureBucket creates the bucket of rawURL (s3://bucket/prefix) if it does
// not exist, and reports whether it did. The checkpoint store never creates
// buckets; this is for setting up a test or demo store.
func EnsureBucket(ctx context.Context, rawURL string, opt s3.Options) (bool, error) {
	r, err := openRemote(rawURL, opt)
	if err != nil {
		return false, fmt.Errorf("create bucket: %w", err)
	}
	ok, err := r.client.BucketExists(ctx, r.bucket)
	if err != nil {
		return false, fmt.Errorf("create bucket %s at %s: %w%s", r.bucket, r.endpoint, err, r.hint(err))
	}
	if ok {
		return false, nil
	}
	if err := r.client.MakeBucket(ctx, r.bucket, minio.MakeBucketOptions{Region: opt.S3Region}); err != nil {
		return false, fmt.Errorf("create bucket %s at %s: %w%s", r.bucket, r.endpoint, err, r.hint(err))
	}
	return true, nil
}

// remote is a prepared dataset's place in a bucket.
type remote struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or ending in '/'
	endpoint string // scheme://host[:port], for messages
}

func (r *remote) String() string {
	if r.prefix == "" {
		return "s3://" + r.bucket
	}
	return "s3://" + r.bucket + "/" + strings.TrimSuffix(r.prefix, "/")
}

func (r *remote) key(file string) string { return r.prefix + file }

// unsafeName matches what a cache folder name may not contain.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// cacheName is the cache folder's name: readable, and unique for the
// bucket and prefix by a hash of both.
func (r *remote) cacheName() string {
	sum := sha256.Sum256([]byte(r.String()))
	readable := unsafeName.ReplaceAllString(strings.ReplaceAll(strings.TrimSuffix(r.bucket+"/"+r.prefix, "/"), "/", "-"), "_")
	if len(readable) > 80 {
		readable = readable[:80]
	}
	return fmt.Sprintf("s3-%s-%x", readable, sum[:6])
}

// parseRemote splits s3://bucket/prefix, checking both.
func parseRemote(rawURL string) (bucket, prefix string, err error) {
	if !IsRemote(rawURL) {
		return "", "", fmt.Errorf("%q is not an s3://bucket/prefix URL", rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", fmt.Errorf("dataset URL %q: %w", rawURL, err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("dataset URL %q: give s3://bucket/prefix only (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the server in %s)", rawURL, s3.EnvEndpoint)
	}
	bucket = u.Host
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return "", "", fmt.Errorf("dataset URL %q: bucket name %q: %w", rawURL, bucket, err)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix == "" {
		return bucket, "", nil
	}
	for seg := range strings.SplitSeq(prefix, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsFunc(seg, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return "", "", fmt.Errorf("dataset URL %q: key prefix %q: empty, '.', '..' segments and control characters are not allowed", rawURL, prefix)
		}
	}
	return bucket, prefix + "/", nil
}

// openRemote parses rawURL and makes a client for it from opt and the
// AWS_* credentials. It makes no request.
func openRemote(rawURL string, opt s3.Options) (*remote, error) {
	bucket, prefix, err := parseRemote(rawURL)
	if err != nil {
		return nil, err
	}
	r := &remote{bucket: bucket, prefix: prefix}
	r.client, r.endpoint, _, err = s3.NewClient(opt, "read bucket "+bucket)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	return r, nil
}

// get downloads a whole small object (the manifest).
func (r *remote) get(ctx context.Context, file string) ([]byte, error) {
	obj, err := r.client.GetObject(ctx, r.bucket, r.key(file), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(io.LimitReader(obj, 64<<20))
}

// download streams shard sh into a temporary file next to path, checks its
// size and SHA-256 against the manifest, and renames it to path.
func (r *remote) download(ctx context.Context, sh ShardInfo, path string) (err error) {
	obj, err := r.client.GetObject(ctx, r.bucket, r.key(sh.File), minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	defer obj.Close()
	where := fmt.Sprintf("object s3://%s/%s", r.bucket, r.key(sh.File))
	fix := r.pushAgain()
	st, err := obj.Stat()
	if isNoSuchKey(err) {
		return fmt.Errorf("shard %s: %s is missing (the upload is incomplete); %s", sh.File, where, fix)
	}
	if err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	if st.Size != sh.Bytes {
		return shardSizeError(sh, where, st.Size, fix)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+sh.File+".tmp-")
	if err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = verifyShard(obj, f, sh, where, fix); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	written, statErr := f.Stat()
	if err = f.Close(); err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("shard %s: %w", sh.File, err)
	}
	// This process wrote every byte and checked them as they streamed: the
	// Open that follows need not read them again, if path is still the file
	// written (the rename moved its ctime; another fetcher may have renamed
	// its own copy over it since).
	if st, err := os.Stat(path); err == nil && statErr == nil && os.SameFile(st, written) {
		vouch(st, sh, time.Time{})
	}
	return nil
}

// pushAgain says how to repair the dataset at r.
func (r *remote) pushAgain() string {
	return fmt.Sprintf("push the prepared dataset again (tinct data push DIR %s)", r)
}

// removeStale removes shard files in dir that m does not list (a dataset
// replaced at the same URL). Temporary files are left alone: another
// process may be fetching into the same folder. Errors are ignored: they
// only leave unused files.
func removeStale(dir string, m *Manifest) {
	keep := map[string]bool{}
	for _, sh := range m.allShards() {
		keep[sh.File] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if shardName.MatchString(name) && !keep[name] {
			os.Remove(filepath.Join(dir, name))
		}
	}
}

// parseManifest decodes and validates a manifest read from elsewhere than
// a folder.
func parseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse: %w; the object is damaged, push the dataset again", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// allShards lists the shards of every split, in split order.
func (m *Manifest) allShards() []ShardInfo {
	var out []ShardInfo
	for _, split := range Splits {
		out = append(out, m.Splits[split].Shards...)
	}
	return out
}

func isNoSuchKey(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && er.Code == "NoSuchKey"
}

// hint suggests what to do about common S3 errors.
func (r *remote) hint(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchBucket":
			return fmt.Sprintf(" (bucket %s does not exist at %s: create it with tinct data push --create-bucket DIR %s, or fix the URL or %s)", r.bucket, r.endpoint, r, s3.EnvEndpoint)
		case "SignatureDoesNotMatch", "InvalidAccessKeyId":
			return fmt.Sprintf(" (the server at %s rejected the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that %s names the right server)", r.endpoint, s3.EnvEndpoint)
		case "AccessDenied":
			return fmt.Sprintf(" (the credentials in AWS_ACCESS_KEY_ID may not use %s)", r)
		}
	}
	if err != nil && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Sprintf(" (%s speaks plain HTTP: set %s=1, or give the endpoint as http://host:port)", r.endpoint, s3.EnvInsecure)
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Sprintf(" (cannot reach the S3 server at %s: check %s and that the server is up)", r.endpoint, s3.EnvEndpoint)
	}
	return ""
}
