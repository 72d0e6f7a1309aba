package checkpoint

// The S3 store's tests run against a real MinIO server started by
// internal/miniotest (the harness the dataset tests share). Without a
// MinIO binary they are skipped, or fail when $CI is set.

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tinct/tinct/internal/miniotest"
)

const (
	testBucket = "tinct-test"
	minioUser  = miniotest.User
	minioPass  = miniotest.Password
)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// shared is the server the package's S3 tests share, started on first use
// and stopped by TestMain.
var shared = miniotest.Shared{Label: "checkpoint: S3 store"}

// minioServer is a MinIO server with the helpers these tests use.
type minioServer struct{ *miniotest.Server }

// sharedMinio returns the shared server, with testBucket created, starting
// it on first use. Without a MinIO binary it skips the test (fails it when
// $CI is set).
func sharedMinio(t *testing.T) minioServer {
	t.Helper()
	return minioServer{shared.Server(t, testBucket)}
}

// startMinio starts a server of the test's own on dir.
func startMinio(bin, dir string) (minioServer, error) {
	srv, err := miniotest.Start(bin, dir)
	return minioServer{srv}, err
}

// open opens the S3 store s3://path on srv with the root credentials.
func (srv minioServer) open(t *testing.T, path string) *S3 {
	t.Helper()
	return openS3At(t, srv.Addr, path)
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
