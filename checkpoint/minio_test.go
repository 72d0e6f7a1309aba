package checkpoint

// A MinIO server for the S3 store's tests. The binary comes from
// $TINCT_MINIO, else $GOPATH/bin/minio (make minio builds it there), else
// PATH. Without one the S3 tests are skipped, or fail when $CI is set.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	testBucket = "tinct-test"
	minioUser  = "tinct-test-user"
	minioPass  = "tinct-test-password"
)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.stop()
	os.Exit(code)
}

// sharedServer is the server the package's S3 tests share, started on
// first use and stopped by TestMain.
type sharedServer struct {
	once    sync.Once
	srv     *minioServer
	dir     string
	err     error // why there is no server
	missing bool  // no binary (as opposed to a failed start)
}

var shared sharedServer

func (s *sharedServer) stop() {
	if s.srv != nil {
		s.srv.stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// sharedMinio returns the shared server, with testBucket created, starting
// it on first use. Without a MinIO binary it skips the test (fails it when
// $CI is set).
func sharedMinio(t *testing.T) *minioServer {
	t.Helper()
	shared.once.Do(func() {
		bin, err := findMinio()
		if err != nil {
			shared.err, shared.missing = err, true
			fmt.Fprintf(os.Stderr, "checkpoint: S3 STORE TESTS SKIPPED: %v\n", err)
			return
		}
		if shared.dir, err = os.MkdirTemp("", "tinct-minio-"); err != nil {
			shared.err = err
			return
		}
		if shared.srv, err = startMinio(bin, shared.dir); err != nil {
			shared.err = err
			return
		}
		if err := shared.srv.makeBucket(testBucket); err != nil {
			shared.err = err
			shared.srv.stop()
			shared.srv = nil
		}
	})
	switch {
	case shared.srv != nil:
		return shared.srv
	case shared.missing:
		skipOrFail(t, shared.err)
	default:
		t.Fatalf("MinIO for the S3 store tests: %v", shared.err)
	}
	return nil
}

// minioBinary returns the MinIO binary, for a test that starts its own
// server; without one it skips the test (fails it when $CI is set).
func minioBinary(t *testing.T) string {
	t.Helper()
	bin, err := findMinio()
	if err != nil {
		skipOrFail(t, err)
	}
	return bin
}

func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skipf("S3 store tests SKIPPED: %v", err)
	}
	t.Fatalf("%v (CI is set, so the S3 store tests must run)", err)
}

// findMinio returns the MinIO binary to test against.
func findMinio() (string, error) {
	if bin := os.Getenv("TINCT_MINIO"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("TINCT_MINIO=%s: %w", bin, err)
		}
		return bin, nil
	}
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	for _, gopath := range filepath.SplitList(gopath) {
		bin := filepath.Join(gopath, "bin", "minio")
		if fi, err := os.Stat(bin); err == nil && !fi.IsDir() {
			return bin, nil
		}
	}
	if bin, err := exec.LookPath("minio"); err == nil {
		return bin, nil
	}
	return "", errors.New("no MinIO server binary: set TINCT_MINIO, or run make minio to build it into $(go env GOPATH)/bin/minio")
}

// minioServer is a MinIO process serving dir on 127.0.0.1.
type minioServer struct {
	bin, dir string
	addr     string // host:port of the S3 API
	cmd      *exec.Cmd
	exited   chan struct{}
	out      *syncBuffer
	stopOnce sync.Once
}

// startMinio starts MinIO on dir and waits until it answers. A port picked
// free can be taken before MinIO binds it, so a start that fails is retried
// on other ports.
func startMinio(bin, dir string) (*minioServer, error) {
	var errs []error
	for range 3 {
		srv, err := tryStartMinio(bin, dir)
		if err == nil {
			return srv, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func tryStartMinio(bin, dir string) (*minioServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	console, err := freeAddr()
	if err != nil {
		return nil, err
	}
	srv := &minioServer{bin: bin, dir: dir, addr: addr, exited: make(chan struct{}), out: &syncBuffer{}}
	srv.cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, dir)
	srv.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPass,
		"MINIO_UPDATE=off", "MINIO_BROWSER=off")
	srv.cmd.Stdout, srv.cmd.Stderr = srv.out, srv.out
	srv.cmd.SysProcAttr = minioProcAttr()
	if err := srv.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		srv.cmd.Wait()
		close(srv.exited)
	}()

	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-srv.exited:
			return nil, fmt.Errorf("MinIO exited before answering on %s: %v\n%s", addr, srv.cmd.ProcessState, srv.out)
		case <-deadline.C:
			srv.stop()
			return nil, fmt.Errorf("MinIO did not answer on %s within 60s:\n%s", addr, srv.out)
		case <-tick.C:
			resp, err := client.Get("http://" + addr + "/minio/health/live")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv, nil
			}
		}
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago (MinIO cannot listen on port 0 and report the port).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// stop kills the server's process group and waits for it to exit.
func (srv *minioServer) stop() {
	srv.stopOnce.Do(func() {
		killProcessGroup(srv.cmd)
		<-srv.exited
	})
}

// client returns a MinIO client with the root credentials.
func (srv *minioServer) client() (*minio.Client, error) {
	return minio.New(srv.addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPass, "")})
}

func (srv *minioServer) makeBucket(bucket string) error {
	c, err := srv.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return nil
}

// open opens the S3 store s3://path on srv with the root credentials.
func (srv *minioServer) open(t *testing.T, path string) *S3 {
	t.Helper()
	return openS3At(t, srv.addr, path)
}

// openS3At opens s3://path at endpoint (plain HTTP) with the test server's
// root credentials.
func openS3At(t *testing.T, endpoint, path string) *S3 {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", minioUser)
	t.Setenv("AWS_SECRET_ACCESS_KEY", minioPass)
	t.Setenv("AWS_SESSION_TOKEN", "")
	s, err := OpenWith("s3://"+path, Options{S3Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	return s.(*S3)
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stallProxy forwards TCP connections to a server. A connection that has
// sent more than the limit towards the server stops being forwarded in that
// direction (the client's writes then block, as on a hung network) until
// the proxy is closed; stalled is closed when that first happens.
type stallProxy struct {
	ln      net.Listener
	target  string
	limit   atomic.Int64 // bytes per connection; 0: no limit
	stalled chan struct{}
	once    sync.Once
	done    chan struct{}
	mu      sync.Mutex
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
	closed  sync.Once
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, stalled: make(chan struct{}), done: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

// track remembers c for close; false if the proxy is closed.
func (p *stallProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *stallProxy) serve(client net.Conn) {
	if !p.track(client) {
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(server) {
		client.Close()
		return
	}
	p.wg.Go(func() {
		io.Copy(client, server)
		client.Close()
		server.Close()
	})
	defer server.Close()
	defer client.Close()
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if limit := p.limit.Load(); limit > 0 && sent+int64(n) > limit {
				p.once.Do(func() { close(p.stalled) })
				<-p.done
				return
			}
			sent += int64(n)
			if _, err := server.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *stallProxy) close() {
	p.closed.Do(func() {
		close(p.done)
		p.ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.conns = nil
		p.mu.Unlock()
		p.wg.Wait()
	})
}
