package checkpoint

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/tinct/tinct/internal/s3"
)

// Options configures how OpenWith reaches an S3 store (endpoint, TLS,
// region; see internal/s3, which makes the client for this store and for
// datasets in a bucket). Directory stores ignore it.
type Options = s3.Options

// Environment variables EnvOptions and Open read.
const (
	EnvS3Endpoint = s3.EnvEndpoint // Options.S3Endpoint
	EnvS3Insecure = s3.EnvInsecure // "1": plain HTTP (Options.S3Secure false)
	EnvS3Region   = s3.EnvRegion   // Options.S3Region
)

// EnvOptions returns the options Open uses: the endpoint from
// TINCT_S3_ENDPOINT (empty: Amazon S3), TLS on unless TINCT_S3_INSECURE=1,
// and the region from TINCT_S3_REGION (empty: ask the server).
func EnvOptions() Options { return s3.EnvOptions() }

// S3 is a Store in an S3 bucket under a key prefix; see the package
// documentation for its layout and guarantees.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or "a/b/": every key starts with it
	endpoint string // scheme://host[:port], for messages
	keyID    string // AWS_ACCESS_KEY_ID, for messages (it is not secret)
	mu       sync.Mutex
}

var _ Store = (*S3)(nil)

// openTimeout bounds the request OpenS3 makes to check the bucket.
const openTimeout = 30 * time.Second

// OpenS3 opens the store in bucket under prefix ("" for the bucket's top
// level; "runs/a" keeps every key under runs/a/). Credentials come from
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if
// set). It checks that the bucket exists and can be listed with them; it
// never creates the bucket.
func OpenS3(bucket, prefix string, opt Options) (*S3, error) {
	s := &S3{bucket: bucket, prefix: strings.Trim(prefix, "/")}
	if s.prefix != "" {
		s.prefix += "/"
	}
	fail := func(err error) (*S3, error) {
		return nil, fmt.Errorf("open checkpoint store %s: %w", s, err)
	}
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return fail(fmt.Errorf("bucket name %q: %w", bucket, err))
	}
	if err := checkPrefix(s.prefix); err != nil {
		return fail(err)
	}
	client, endpoint, keyID, err := s3.NewClient(opt, "read and write bucket "+bucket)
	if err != nil {
		return fail(err)
	}
	s.client, s.endpoint, s.keyID = client, endpoint, keyID
	// One listing checks the endpoint, the credentials, the bucket and the
	// permission to list it.
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	for obj := range s.client.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: s.prefix, MaxKeys: 1}) {
		if obj.Err != nil && ctx.Err() == nil {
			return fail(fmt.Errorf("check bucket %s at %s: %w%s", bucket, s.endpoint, obj.Err, s.hint(obj.Err)))
		}
		break
	}
	if err := ctx.Err(); err != nil {
		return fail(fmt.Errorf("check bucket %s at %s: no answer within %v (%w); check %s and that the server is up",
			bucket, s.endpoint, openTimeout, err, EnvS3Endpoint))
	}
	return s, nil
}

// checkPrefix rejects key prefixes that would not name a folder-like
// place: empty segments, "." and "..".
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := s3utils.CheckValidObjectNamePrefix(prefix); err != nil {
		return fmt.Errorf("key prefix %q: %w", prefix, err)
	}
	for seg := range strings.SplitSeq(strings.TrimSuffix(prefix, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key prefix %q: empty, '.' and '..' segments are not allowed", strings.TrimSuffix(prefix, "/"))
		}
		for _, r := range seg {
			if r < ' ' || r == 0x7f {
				return fmt.Errorf("key prefix %q: control characters are not allowed", strings.TrimSuffix(prefix, "/"))
			}
		}
	}
	return nil
}

// Bucket returns the store's bucket.
func (s *S3) Bucket() string { return s.bucket }

// Prefix returns the store's key prefix: "" or ending in '/'.
func (s *S3) Prefix() string { return s.prefix }

// String returns the store's URL, s3://bucket/prefix, which Open accepts.
// The endpoint is not part of it.
func (s *S3) String() string {
	u := url.URL{Scheme: "s3", Host: s.bucket}
	if s.prefix != "" {
		u.Path = "/" + strings.TrimSuffix(s.prefix, "/")
	}
	return u.String()
}

func (s *S3) key(name string, file string) string {
	if name == "" {
		return s.prefix + file
	}
	return s.prefix + name + "/" + file
}

// Save uploads c's parts to <prefix>/<c.Name>/, then its manifest, then
// points latest at it; see the package documentation for what a failure
// leaves behind.
func (s *S3) Save(ctx context.Context, c *Checkpoint) (err error) {
	if err := validateCheckpoint(c); err != nil {
		return err
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("save checkpoint %s to %s: %s: %w%s", c.Name, s, what, err, s.hint(err))
	}
	if err := ctx.Err(); err != nil {
		return fail("canceled", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	m := newManifest(c, time.Now())
	js, err := m.encode()
	if err != nil {
		return fail("encode manifest", err)
	}
	// What is there now: a checkpoint of this name being replaced, or the
	// parts of a save that was cut short.
	before, err := s.objects(ctx, c.Name)
	if err != nil {
		return fail("list what is stored under "+c.Name+"/", err)
	}
	// Hide the checkpoint being replaced before overwriting its parts.
	if _, ok := before[manifestFile]; ok {
		if err := s.remove(ctx, s.key(c.Name, manifestFile)); err != nil {
			return fail("hide the checkpoint it replaces", err)
		}
	}
	var uploaded []string
	defer func() {
		if err != nil {
			s.discard(ctx, err, c.Name, uploaded)
		}
	}()
	for _, p := range m.Parts {
		if err := ctx.Err(); err != nil {
			return fail("canceled", err)
		}
		key := s.key(c.Name, p.Name)
		uploaded = append(uploaded, key)
		if err := s.put(ctx, key, c.Parts[p.Name], "application/octet-stream"); err != nil {
			return fail("upload part "+p.Name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fail("canceled", err)
	}
	if err := s.put(ctx, s.key(c.Name, manifestFile), js, "application/json"); err != nil {
		return fail("upload manifest", err)
	}
	uploaded = nil // the checkpoint is complete: never discard it
	if err := s.writeLatest(ctx, c.Name); err != nil {
		return fail("update the latest pointer", err)
	}
	// Remove what the new checkpoint did not overwrite.
	var stale []error
	for file := range before {
		if _, ok := c.Parts[file]; ok || file == manifestFile {
			continue
		}
		if err := s.remove(ctx, s.key(c.Name, file)); err != nil {
			stale = append(stale, err)
		}
	}
	if len(stale) > 0 {
		slog.Warn("checkpoint: could not remove objects the new checkpoint replaced; the next save of this name will retry",
			"store", s.String(), "checkpoint", c.Name, "err", errors.Join(stale...))
	}
	return nil
}

// discard removes the parts a failed save uploaded, so that they do not
// linger unseen. It does not try when the server cannot be reached.
func (s *S3) discard(ctx context.Context, cause error, name string, keys []string) {
	if len(keys) == 0 || isNetError(cause) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, key := range keys {
		if err := s.remove(ctx, key); err != nil {
			slog.Warn("checkpoint: could not remove the parts of a failed save; they are not a checkpoint and the next save of this name replaces them",
				"store", s.String(), "checkpoint", name, "err", err)
			return
		}
	}
}

// List describes the checkpoints under the prefix, newest first. Names
// without a readable manifest are skipped.
func (s *S3) List(ctx context.Context) ([]Info, error) {
	infos, _, err := s.scan(ctx)
	return infos, err
}

// scanWorkers bounds the manifests scan fetches at once.
const scanWorkers = 8

func (s *S3) scan(ctx context.Context) ([]Info, []badCheckpoint, error) {
	fail := func(err error) ([]Info, []badCheckpoint, error) {
		return nil, nil, fmt.Errorf("list checkpoints in %s: %w%s", s, err, s.hint(err))
	}
	var names []string
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix}) {
		if obj.Err != nil {
			return fail(obj.Err)
		}
		name, ok := strings.CutSuffix(strings.TrimPrefix(obj.Key, s.prefix), "/")
		if ok && ValidateName(name) == nil {
			names = append(names, name)
		}
	}
	if err := ctx.Err(); err != nil { // the listing stops silently on cancel
		return fail(err)
	}

	type result struct {
		m   *manifest
		err error
	}
	results := make([]result, len(names))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(scanWorkers, len(names)) {
		wg.Go(func() {
			for i := range next {
				data, err := s.get(ctx, s.key(names[i], manifestFile))
				if err != nil {
					results[i].err = fmt.Errorf("checkpoint %s: read %s: %w%s", names[i], manifestFile, err, s.hint(err))
					continue
				}
				results[i].m, results[i].err = decodeManifest(names[i], data)
			}
		})
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()

	var infos []Info
	var bad []badCheckpoint
	for i, r := range results {
		switch {
		case isNotFound(r.err):
			// Parts without a manifest: not a checkpoint.
		case r.err != nil && ctx.Err() != nil:
			return fail(ctx.Err())
		case r.m == nil:
			bad = append(bad, badCheckpoint{names[i], r.err})
		default:
			infos = append(infos, r.m.info(names[i]))
		}
	}
	sortNewestFirst(infos)
	return infos, bad, nil
}

// Load downloads checkpoint name and verifies every part against its
// manifest.
func (s *S3) Load(ctx context.Context, name string) (*Checkpoint, error) {
	return s.read(ctx, name, true)
}

// Verify checks checkpoint name like Load, streaming its parts through the
// hash instead of holding them in memory.
func (s *S3) Verify(ctx context.Context, name string) error {
	_, err := s.read(ctx, name, false)
	return err
}

func (s *S3) read(ctx context.Context, name string, keep bool) (*Checkpoint, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("load checkpoint from %s: %w", s, err)
	}
	fail := func(err error) (*Checkpoint, error) {
		return nil, fmt.Errorf("load checkpoint %s from %s: %w%s", name, s, err, s.hint(err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	data, err := s.get(ctx, s.key(name, manifestFile))
	if isNotFound(err) {
		objs, lerr := s.objects(ctx, name)
		switch {
		case lerr != nil:
			return fail(lerr)
		case len(objs) == 0:
			return nil, fmt.Errorf("%w: %s in %s", ErrNotFound, name, s)
		default:
			return nil, errManifestMissing(name)
		}
	}
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", manifestFile, err))
	}
	m, err := decodeManifest(name, data)
	if err != nil {
		return nil, err
	}
	c := m.header(name)
	if keep {
		c.Parts = make(map[string][]byte, len(m.Parts))
	}
	for _, p := range m.Parts {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		data, err := s.readPart(ctx, name, p, keep)
		if err != nil {
			return nil, err
		}
		if keep {
			c.Parts[p.Name] = data
		}
	}
	return c, nil
}

// readPart downloads part p of checkpoint name and checks it against the
// manifest (see checkPart).
func (s *S3) readPart(ctx context.Context, name string, p manifestPart, keep bool) ([]byte, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, s.key(name, p.Name), minio.GetObjectOptions{})
	if err == nil {
		defer obj.Close()
		var st minio.ObjectInfo
		if st, err = obj.Stat(); err == nil {
			return checkPart(name, p, st.Size, obj, keep, "object")
		}
	}
	if isNotFound(err) {
		return nil, errPartMissing(name, p, "object")
	}
	return nil, fmt.Errorf("checkpoint %s: part %s: %w%s", name, p.Name, err, s.hint(err))
}

// Latest loads the checkpoint latest names, falling back to the newest valid
// one; see Store.
func (s *S3) Latest(ctx context.Context) (*Checkpoint, []error, error) {
	return latest(ctx, s)
}

// Delete removes checkpoint name. If latest names it, latest moves to the
// newest remaining checkpoint first (or is removed if none remains).
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("delete checkpoint from %s: %w", s, err)
	}
	fail := func(err error) error {
		return fmt.Errorf("delete checkpoint %s from %s: %w%s", name, s, err, s.hint(err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.objects(ctx, name)
	if err != nil {
		return fail(err)
	}
	if len(objs) == 0 {
		return fmt.Errorf("delete checkpoint: %w: %s in %s", ErrNotFound, name, s)
	}
	if _, ok := objs[manifestFile]; !ok {
		return fmt.Errorf("delete checkpoint %s from %s: s3://%s/%s is not a checkpoint (no %s); remove it by hand if you mean to",
			name, s, s.bucket, s.key(name, ""), manifestFile)
	}
	if latest, err := s.readLatest(ctx); err == nil && latest == name {
		infos, err := s.List(ctx)
		if err != nil {
			return fmt.Errorf("delete checkpoint %s: %w", name, err)
		}
		if next := newestOther(infos, name); next != "" {
			err = s.writeLatest(ctx, next)
		} else {
			err = s.remove(ctx, s.key("", latestFile))
		}
		if err != nil {
			return fail(fmt.Errorf("update the latest pointer: %w", err))
		}
	}
	if err := s.removeCheckpoint(ctx, name, objs); err != nil {
		return fail(err)
	}
	return nil
}

// Prune removes the checkpoints older than the newest keep valid ones,
// never the one latest names; see Store.
func (s *S3) Prune(ctx context.Context, keep int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	removed, errs := prune(ctx, s, keep, func(name string) error {
		objs, err := s.objects(ctx, name)
		if err != nil {
			return err
		}
		return s.removeCheckpoint(ctx, name, objs)
	})
	if len(errs) > 0 {
		err := errors.Join(errs...)
		return removed, fmt.Errorf("prune checkpoints in %s: %w%s", s, err, s.hint(err))
	}
	return removed, nil
}

// removeCheckpoint deletes the manifest of checkpoint name first, so that
// it vanishes from view at once, then the rest of objs (file names under
// name/). A failure after the manifest is gone is logged: the leftovers are
// not a checkpoint, and the next save of that name replaces them.
func (s *S3) removeCheckpoint(ctx context.Context, name string, objs map[string]int64) error {
	if err := s.remove(ctx, s.key(name, manifestFile)); err != nil {
		return err
	}
	var errs []error
	for file := range objs {
		if file == manifestFile {
			continue
		}
		if err := s.remove(ctx, s.key(name, file)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		slog.Warn("checkpoint: could not remove all objects of a deleted checkpoint; it is gone from view, remove the rest by hand or save a checkpoint of that name",
			"store", s.String(), "checkpoint", name, "err", errors.Join(errs...))
	}
	return nil
}

// objects lists the objects directly under <prefix>/<name>/, by file name,
// with their sizes.
func (s *S3) objects(ctx context.Context, name string) (map[string]int64, error) {
	dir := s.key(name, "")
	objs := make(map[string]int64)
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: dir}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		if file := strings.TrimPrefix(obj.Key, dir); file != "" && !strings.HasSuffix(file, "/") {
			objs[file] = obj.Size
		}
	}
	if err := ctx.Err(); err != nil { // the listing stops silently on cancel
		return nil, err
	}
	return objs, nil
}

func (s *S3) readLatest(ctx context.Context) (string, error) {
	data, err := s.get(ctx, s.key("", latestFile))
	if isNotFound(err) {
		return "", fmt.Errorf("%s: %w", s.key("", latestFile), fs.ErrNotExist)
	}
	if err != nil {
		return "", fmt.Errorf("read %s in %s: %w%s", latestFile, s, err, s.hint(err))
	}
	return strings.TrimSpace(string(data)), nil
}

// writeLatest replaces the latest pointer with name; an S3 PUT replaces an
// object atomically.
func (s *S3) writeLatest(ctx context.Context, name string) error {
	return s.put(ctx, s.key("", latestFile), []byte(name+"\n"), "text/plain")
}

func (s *S3) put(ctx context.Context, key string, data []byte, contentType string) error {
	_, err := s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: contentType})
	return err
}

// get downloads a whole object; a missing one is an error isNotFound
// reports.
func (s *S3) get(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

func (s *S3) remove(ctx context.Context, key string) error {
	return s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
}

func s3Code(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

func isNotFound(err error) bool {
	return err != nil && s3Code(err) == "NoSuchKey"
}

// isNetError reports whether err says the server could not be reached or
// the connection broke, as opposed to an answer from it or a cancel.
func isNetError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &oe) || errors.As(err, &de) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// hint suggests what to do about common S3 errors.
func (s *S3) hint(err error) string {
	if err == nil {
		return ""
	}
	switch s3Code(err) {
	case "SignatureDoesNotMatch":
		return fmt.Sprintf(" (the server at %s rejected the request signature: AWS_SECRET_ACCESS_KEY is not the secret key of AWS_ACCESS_KEY_ID %s; check both)",
			s.endpoint, s.keyID)
	case "InvalidAccessKeyId":
		return fmt.Sprintf(" (the server at %s knows no access key %s: check AWS_ACCESS_KEY_ID, and that %s names the right server)", s.endpoint, s.keyID, EnvS3Endpoint)
	case "AccessDenied":
		return fmt.Sprintf(" (the credentials in AWS_ACCESS_KEY_ID may not use %s: they need to list, read, write and delete objects under it)", s)
	case "NoSuchBucket":
		return fmt.Sprintf(" (bucket %s does not exist at %s; this store does not create buckets: create it, e.g. mc mb ALIAS/%s, or fix the URL or %s)",
			s.bucket, s.endpoint, s.bucket, EnvS3Endpoint)
	case "RequestTimeTooSkewed":
		return " (this machine's clock is off from the server's; synchronise it)"
	case "XMinioStorageFull", "StorageFull":
		return " (the S3 server is out of space: free space, e.g. by pruning old checkpoints)"
	case "AuthorizationHeaderMalformed", "InvalidRegion":
		return fmt.Sprintf(" (wrong region: set %s to the bucket's region, or leave it empty to ask the server)", EnvS3Region)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Sprintf(" (%s speaks plain HTTP: set %s=1, or give the endpoint as http://host:port)", s.endpoint, EnvS3Insecure)
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &ua), errors.As(err, &hn):
		return fmt.Sprintf(" (the TLS certificate of %s is not trusted for it: point SSL_CERT_FILE at its CA, or fix %s)", s.endpoint, EnvS3Endpoint)
	case errors.As(err, &rh):
		return fmt.Sprintf(" (%s does not speak TLS: set %s=1, or give the endpoint as http://host:port)", s.endpoint, EnvS3Insecure)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ""
	case isNetError(err):
		return fmt.Sprintf(" (cannot reach the S3 server at %s: check %s and that the server is up)", s.endpoint, EnvS3Endpoint)
	}
	return ""
}
