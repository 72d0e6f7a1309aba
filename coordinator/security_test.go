package coordinator_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinct/tinct/internal/syncbuf"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/worker"
)

// recorder is a TCP proxy that keeps every byte it forwards, both ways.
type recorder struct {
	ln  net.Listener
	buf syncbuf.Buffer
}

func record(t *testing.T, target string) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			for _, p := range [][2]net.Conn{{c, u}, {u, c}} {
				go func() {
					defer p[0].Close()
					defer p[1].Close()
					_, _ = io.Copy(p[1], io.TeeReader(p[0], &r.buf))
				}()
			}
		}
	}()
	return r
}

// TestClusterTrafficEncrypted: a proxy between a worker and its
// coordinator sees neither the configuration nor the weights with TLS; in
// plaintext (which proves the search finds them) it sees both.
func TestClusterTrafficEncrypted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sec     *cluster.Security
		visible bool
	}{{"plaintext", cluster.Plaintext(), true}, {"tls", testTLS(t), false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), "epochs=1")
			run := startCluster(t, cfg, coordinator.Options{}, coordinator.RemoteOptions{Security: tc.sec})
			weights := cluster.EncodeFloats(run.st.Net.Params[1000:1016]) // 64 bytes of the initial weights
			proxy := record(t, run.cl.Addr())
			run.addWorker("w0", worker.JoinOptions{Coordinator: proxy.ln.Addr().String()})
			run.finish(cfg.Epochs)
			got := proxy.buf.Bytes()
			if len(got) < 8*len(weights) {
				t.Fatalf("the proxy saw %d bytes: the worker did not go through it", len(got))
			}
			for what, b := range map[string][]byte{"weights": weights, "configuration": []byte("widths:")} {
				if seen := bytes.Contains(got, b); seen != tc.visible {
					t.Errorf("%s on the wire: %t, want %t", what, seen, tc.visible)
				}
			}
		})
	}
}

// TestClusterReplayRefused: a Hello captured from a session that was
// accepted is refused when replayed — on the same coordinator, on a
// coordinator restarted on the same address with the same secret, and
// under another worker name.
func TestClusterReplayRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		sec  *cluster.Security
	}{{"plaintext", cluster.Plaintext()}, {"tls", testTLS(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			start := func(addr string) *coordinator.Remote {
				cl, err := coordinator.StartRemote(cfg, coordinator.RemoteOptions{Listen: addr, Secret: testSecret, Security: tc.sec, GossipProfile: "local", Log: quiet()})
				if err != nil {
					t.Fatal(err)
				}
				return cl
			}
			cl := start("127.0.0.1:0")
			addr := cl.Addr()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			gctx, end := context.WithCancel(ctx)
			_, captured, err := session(gctx, t, addr, tc.sec, "w0", testSecret)
			if err != nil {
				t.Fatalf("a genuine session: %v", err)
			}
			end()
			renamed := &cluster.Hello{Name: "w9", Instance: captured.Instance, Nonce: captured.Nonce, Mac: captured.Mac}
			if err := replay(ctx, t, addr, tc.sec, captured); status.Code(err) != codes.Unauthenticated {
				t.Errorf("replayed to the same coordinator: got %v, want Unauthenticated", err)
			}
			if err := replay(ctx, t, addr, tc.sec, renamed); status.Code(err) != codes.Unauthenticated {
				t.Errorf("replayed under another name: got %v, want Unauthenticated", err)
			}
			cl.Close(cluster.Outcome_INTERRUPTED, "restart")
			cl = start(addr)
			defer cl.Close(cluster.Outcome_FAILED, "test over")
			if err := replay(ctx, t, addr, tc.sec, captured); status.Code(err) != codes.Unauthenticated {
				t.Errorf("replayed after a restart: got %v, want Unauthenticated", err)
			}
		})
	}
}

// replay opens a session and answers the challenge with a captured Hello.
func replay(ctx context.Context, t *testing.T, addr string, sec *cluster.Security, hello *cluster.Hello) error {
	t.Helper()
	s, err := rawSession(ctx, t, addr, sec)
	if err != nil {
		return err
	}
	if _, err := s.Recv(); err != nil { // the challenge
		return err
	}
	if err := s.Send(&cluster.FromWorker{Body: &cluster.FromWorker_Hello{Hello: hello}}); err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// TestPlaintextOnlyOnLoopback: plaintext is refused for any address that
// is not a loopback one, on both sides.
func TestPlaintextOnlyOnLoopback(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	_, err := coordinator.StartRemote(cfg, coordinator.RemoteOptions{Listen: "0.0.0.0:0", Secret: testSecret, Security: cluster.Plaintext(), Log: quiet()})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("coordinator on 0.0.0.0 in plaintext: %v", err)
	}
	err = worker.Join(context.Background(), worker.JoinOptions{Coordinator: "10.1.2.3:7070", Name: "w", Secret: testSecret, Security: cluster.Plaintext(), Log: quiet(),
		Open: func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("worker to 10.1.2.3 in plaintext: %v", err)
	}
}

// TestClusterForeignCertificateRefused: a worker whose certificate comes
// from another CA cannot connect, and says why at once instead of retrying
// until --wait.
func TestClusterForeignCertificateRefused(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cl, err := coordinator.StartRemote(cfg, coordinator.RemoteOptions{Listen: "127.0.0.1:0", Secret: testSecret, Security: testTLS(t), GossipProfile: "local", Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(cluster.Outcome_FAILED, "test over")
	start := time.Now()
	err = worker.Join(context.Background(), worker.JoinOptions{Coordinator: cl.Addr(), Name: "w", Secret: testSecret, Security: testTLS(t), Wait: time.Minute, Log: quiet(),
		Open: func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("worker with another CA's certificate: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v to give up", d)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timed out instead of refusing: %v", err)
	}
}

// TestClusterSurvivesGossipJunk: seconds of junk on a worker's gossip port
// (UDP and TCP) while it trains do not lose the run — with min_workers 2,
// a worker the gossip drops rejoins — and the junk is logged.
func TestClusterSurvivesGossipJunk(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=30")
	gossip := freeAddr(t)
	junkDone := make(chan struct{})
	var once sync.Once
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 2, Wait: 30 * time.Second, AfterStep: func(step int64) {
		switch {
		case step == 3:
			once.Do(func() { go junk(gossip, 3*time.Second, junkDone) })
		case step == 40:
			<-junkDone // the rest of the run comes after the junk
		case step > 3 && step < 40:
			time.Sleep(20 * time.Millisecond) // train slowly while the junk flies
		}
	}}, coordinator.RemoteOptions{})
	var logs syncbuf.Buffer
	run.addWorker("w0", worker.JoinOptions{})
	run.addWorker("w1", worker.JoinOptions{GossipBind: gossip, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if total := run.finish(cfg.Epochs); total <= 40 {
		t.Fatalf("%d steps: the run must outlast the junk (step 40)", total)
	}
	if !strings.Contains(logs.String(), "memberlist") {
		t.Errorf("the junk was not logged; the worker's log:\n%s", logs.String())
	}
}

// freeAddr is a 127.0.0.1 address with a port free for TCP and UDP.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for TCP and UDP")
	return ""
}

// junk sends random bytes to addr over UDP and TCP for d.
func junk(addr string, d time.Duration, done chan struct{}) {
	defer close(done)
	end := time.Now().Add(d)
	b := make([]byte, 1400)
	for time.Now().Before(end) {
		_, _ = rand.Read(b)
		if c, err := net.Dial("udp", addr); err == nil {
			_, _ = c.Write(b)
			c.Close()
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(b)
			c.Close()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterLogsJunk: bytes that are not the cluster's protocol on the
// coordinator's port are logged (once, however many), not dropped silently.
func TestClusterLogsJunk(t *testing.T) {
	for _, tc := range []struct {
		name string
		sec  *cluster.Security
		want string
	}{{"plaintext", cluster.Plaintext(), "not HTTP/2"}, {"tls", testTLS(t), "TLS handshake failed"}} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			cl, err := coordinator.StartRemote(testConfig(t, t.TempDir()), coordinator.RemoteOptions{Listen: "127.0.0.1:0", Secret: testSecret, Security: tc.sec,
				GossipProfile: "local", Log: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close(cluster.Outcome_FAILED, "test over")
			for range 5 {
				c, err := net.Dial("tcp", cl.Addr())
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("junk", 100)))
				_, _ = io.Copy(io.Discard, c) // until the server hangs up
				c.Close()
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), tc.want) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := strings.Count(logs.String(), "junk on a cluster port"); n != 1 || !strings.Contains(logs.String(), tc.want) {
				t.Errorf("%d junk reports, want 1 saying %q; log:\n%s", n, tc.want, logs.String())
			}
		})
	}
}

// TestClusterCertificateNamesNotChecked: certificates from the cluster's
// CA make a node a member whatever names they carry (one certificate can
// serve every pod of a StatefulSet); the coordinator's is not for
// 127.0.0.1, yet the worker joins it there.
func TestClusterCertificateNamesNotChecked(t *testing.T) {
	dirs, err := cluster.MakeCerts(cluster.CertOptions{Out: t.TempDir(), Nodes: [][]string{{"coordinator.example"}, {"some-worker"}}})
	if err != nil {
		t.Fatal(err)
	}
	load := func(dir string) *cluster.Security {
		sec, err := cluster.LoadTLS(dir)
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	cfg := testConfig(t, t.TempDir(), "epochs=1")
	run := startCluster(t, cfg, coordinator.Options{}, coordinator.RemoteOptions{Security: load(dirs[0])})
	run.addWorker("w0", worker.JoinOptions{Security: load(dirs[1])})
	run.finish(cfg.Epochs)
}

// TestClusterAdvertise: workers whose ring servers bind every interface
// (as in a container) tell their neighbours the advertised address.
func TestClusterAdvertise(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=1")
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 2}, coordinator.RemoteOptions{})
	for _, name := range []string{"w0", "w1"} {
		run.addWorker(name, worker.JoinOptions{RingListen: "0.0.0.0:0", Advertise: "127.0.0.1"})
	}
	run.finish(cfg.Epochs)
}
