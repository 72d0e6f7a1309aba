// Package miniotest runs a real MinIO server on 127.0.0.1 for tests: one
// harness shared by the packages that talk S3 (checkpoint, dataset).
//
// The binary comes from $TINCT_MINIO, else $(go env GOPATH)/bin/minio
// (make minio builds it there), else PATH. Without one, tests that need it
// are skipped with a loud message, or fail when $CI is set.
//
// Typical use, one server per test binary:
//
//	var minioSrv miniotest.Shared // in the package's tests
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		minioSrv.Stop()
//		os.Exit(code)
//	}
//
//	func TestX(t *testing.T) {
//		srv := minioSrv.Server(t, "my-bucket") // skips, or fails under CI, without MinIO
//		srv.SetEnv(t)                           // TINCT_S3_ENDPOINT, TINCT_S3_INSECURE, AWS_* for it
//		...
//	}
package miniotest

import (
	"context"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinct/tinct/internal/syncbuf"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The root credentials every server started here uses.
const (
	User     = "tinct-test-user"
	Password = "tinct-test-password"
)

// FindBinary returns the MinIO binary to test against: $TINCT_MINIO, else
// $(go env GOPATH)/bin/minio, else minio on PATH.
func FindBinary() (string, error) {
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

// Binary returns the MinIO binary, for a test that starts its own server;
// without one it skips the test (fails it when $CI is set).
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		SkipOrFail(t, err)
	}
	return bin
}

// SkipOrFail skips t loudly because MinIO is missing, or fails it when $CI
// is set (CI must run the S3 tests).
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skipf("S3 tests SKIPPED: %v", err)
	}
	t.Fatalf("%v (CI is set, so the S3 tests must run)", err)
}

// Server is a MinIO process serving a folder on 127.0.0.1.
type Server struct {
	Bin, Dir string
	Addr     string // host:port of the S3 API (plain HTTP)

	cmd      *exec.Cmd
	exited   chan struct{}
	out      *syncbuf.Buffer
	stopOnce sync.Once
}

// Start starts MinIO from bin on dir and waits until it answers its health
// check. A port picked free can be taken before MinIO binds it, so a start
// that fails is retried on other ports. Stop it with Stop.
func Start(bin, dir string) (*Server, error) {
	var errs []error
	for range 3 {
		srv, err := tryStart(bin, dir)
		if err == nil {
			return srv, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func tryStart(bin, dir string) (*Server, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	console, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	srv := &Server{Bin: bin, Dir: dir, Addr: addr, exited: make(chan struct{}), out: &syncbuf.Buffer{}}
	srv.cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, dir)
	srv.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+User, "MINIO_ROOT_PASSWORD="+Password,
		"MINIO_UPDATE=off", "MINIO_BROWSER=off")
	srv.cmd.Stdout, srv.cmd.Stderr = srv.out, srv.out
	srv.cmd.SysProcAttr = procAttr()
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
			srv.Stop()
			return nil, fmt.Errorf("MinIO did not answer on %s within 60s:\n%s", addr, srv.out)
		case <-tick.C:
			resp, err := client.Get("http://" + addr + "/minio/health/live")
			if err != nil {
				continue
			}
			resp.Body.Close()
			// live answers 200 before the object layer is up too, and
			// says so in this header; requests until then fail with
			// "Server not initialized yet"
			if resp.StatusCode == http.StatusOK && resp.Header.Get("X-Minio-Server-Status") != "offline" {
				return srv, nil
			}
		}
	}
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago (MinIO cannot listen on port 0 and report the port).
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Stop kills the server's process group (SIGKILL, like a crash) and waits
// for it to exit. It may be called more than once.
func (srv *Server) Stop() {
	srv.stopOnce.Do(func() {
		killProcessGroup(srv.cmd)
		<-srv.exited
	})
}

// Client returns a MinIO client with the root credentials.
func (srv *Server) Client() (*minio.Client, error) {
	return minio.New(srv.Addr, &minio.Options{Creds: credentials.NewStaticV4(User, Password, "")})
}

// MakeBucket creates bucket.
func (srv *Server) MakeBucket(bucket string) error {
	c, err := srv.Client()
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

// SetEnv points tinct's S3 clients at srv for the rest of t: the root
// credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (no session
// token), TINCT_S3_ENDPOINT=srv.Addr and TINCT_S3_INSECURE=1.
func (srv *Server) SetEnv(t testing.TB) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", User)
	t.Setenv("AWS_SECRET_ACCESS_KEY", Password)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("TINCT_S3_ENDPOINT", srv.Addr)
	t.Setenv("TINCT_S3_INSECURE", "1")
	t.Setenv("TINCT_S3_REGION", "")
}

// Shared is one server that a package's tests share, started on first use
// (on a temporary folder) and stopped by Stop, which the package's TestMain
// calls after m.Run. The zero value is ready to use.
type Shared struct {
	// Label names the tests in the skip message ("checkpoint S3 store").
	Label string

	once    sync.Once
	srv     *Server
	dir     string
	err     error // why there is no server
	missing bool  // no binary (as opposed to a failed start)
	mu      sync.Mutex
	buckets map[string]bool
}

// Server returns the shared server, starting it on first use, with each of
// buckets created (once). Without a MinIO binary it skips the test (fails
// it when $CI is set); a server that does not start fails it.
func (s *Shared) Server(t testing.TB, buckets ...string) *Server {
	t.Helper()
	s.once.Do(func() {
		bin, err := FindBinary()
		if err != nil {
			s.err, s.missing = err, true
			label := s.Label
			if label == "" {
				label = "S3"
			}
			fmt.Fprintf(os.Stderr, "%s TESTS SKIPPED: %v\n", strings.ToUpper(label), err)
			return
		}
		if s.dir, err = os.MkdirTemp("", "tinct-minio-"); err != nil {
			s.err = err
			return
		}
		if s.srv, err = Start(bin, s.dir); err != nil {
			s.err = err
		}
	})
	switch {
	case s.srv != nil:
	case s.missing:
		SkipOrFail(t, s.err)
		return nil
	default:
		t.Fatalf("MinIO for the tests: %v", s.err)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range buckets {
		if s.buckets[b] {
			continue
		}
		if err := s.srv.MakeBucket(b); err != nil {
			t.Fatalf("MinIO for the tests: %v", err)
		}
		if s.buckets == nil {
			s.buckets = map[string]bool{}
		}
		s.buckets[b] = true
	}
	return s.srv
}

// Stop stops the shared server, if it was started, and removes its folder.
func (s *Shared) Stop() {
	if s.srv != nil {
		s.srv.Stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
