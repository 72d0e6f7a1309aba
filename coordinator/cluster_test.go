package coordinator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/trainstate"
	"github.com/tinct/tinct/worker"
)

var testSecret = []byte("test cluster secret")

// testTLS makes a cluster CA and one certificate for 127.0.0.1, which
// every node of a test cluster uses.
func testTLS(t *testing.T) *cluster.Security {
	t.Helper()
	dirs, err := cluster.MakeCerts(cluster.CertOptions{Out: t.TempDir(), Nodes: [][]string{{"127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := cluster.LoadTLS(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// rawSession opens a session stream and does nothing more.
func rawSession(ctx context.Context, t *testing.T, addr string, sec *cluster.Security) (grpc.BidiStreamingClient[cluster.FromWorker, cluster.ToWorker], error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(sec.Creds(nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cluster.NewCoordinatorClient(cc).Session(ctx)
}

// session opens a session as a hand-made worker would: it answers the
// challenge with secret under name and returns the stream and the
// coordinator's answer to the Hello (an error for a refusal).
func session(ctx context.Context, t *testing.T, addr string, sec *cluster.Security, name string, secret []byte) (grpc.BidiStreamingClient[cluster.FromWorker, cluster.ToWorker], *cluster.Hello, error) {
	t.Helper()
	s, err := rawSession(ctx, t, addr, sec)
	if err != nil {
		return nil, nil, err
	}
	m, err := s.Recv()
	if err != nil {
		return nil, nil, err
	}
	a := cluster.SessionAuth{Secret: secret, Method: cluster.Coordinator_Session_FullMethodName, Name: name, Instance: "hand-made",
		Challenge: m.GetChallenge().GetNonce(), Nonce: cluster.Nonce(), Channel: cluster.Binding(s.Context())}
	hello := &cluster.Hello{Name: name, Instance: a.Instance, Nonce: a.Nonce, Mac: a.WorkerMAC()}
	if err := s.Send(&cluster.FromWorker{Body: &cluster.FromWorker_Hello{Hello: hello}}); err != nil {
		return nil, hello, err
	}
	if m, err = s.Recv(); err != nil {
		return nil, hello, err
	}
	if m.GetWelcome() == nil {
		return nil, hello, fmt.Errorf("got %T, want a welcome", m.Body)
	}
	return s, hello, nil
}

// clusterRun is a coordinator with the gRPC transport and in-process
// workers that talk to it (and to each other) over gRPC on 127.0.0.1.
type clusterRun struct {
	t      *testing.T
	co     *coordinator.Coordinator
	cl     *coordinator.Remote
	st     *trainstate.State
	mu     sync.Mutex
	sec    *cluster.Security
	sums   map[string]map[int64][]byte // worker → step → checksum after apply
	coSums map[int64][]byte            // the committed state's, after each step
	wg     sync.WaitGroup
	errs   map[string]error // what each worker's Join returned
	cancel context.CancelFunc
	ctx    context.Context
}

func startCluster(t *testing.T, cfg *config.Config, copt coordinator.Options, clopt coordinator.RemoteOptions) *clusterRun {
	t.Helper()
	store, err := checkpoint.Open(cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	if clopt.Listen == "" {
		clopt.Listen = "127.0.0.1:0"
	}
	clopt.Secret, clopt.GossipProfile, clopt.Log = testSecret, "local", quiet()
	if clopt.Security == nil {
		clopt.Security = testTLS(t)
	}
	if clopt.RingTimeout == 0 {
		clopt.RingTimeout = 5 * time.Second
	}
	cl, err := coordinator.StartRemote(cfg, clopt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(cluster.Outcome_FAILED, "test over") })
	st, err := trainstate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &clusterRun{t: t, cl: cl, st: st, sec: clopt.Security, sums: map[string]map[int64][]byte{}, coSums: map[int64][]byte{}, errs: map[string]error{}}
	after := copt.AfterStep
	copt.AfterStep = func(step int64) {
		r.mu.Lock()
		r.coSums[step-1] = cluster.Checksum(st.Net)
		r.mu.Unlock()
		if after != nil {
			after(step)
		}
	}
	copt.State, copt.Train, copt.Store, copt.Transport, copt.Log = st, data, store, cl, quiet()
	if copt.StepTimeout == 0 {
		copt.StepTimeout = 10 * time.Second
	}
	if copt.Wait == 0 {
		copt.Wait = 10 * time.Second
	}
	r.co, err = coordinator.New(copt)
	if err != nil {
		t.Fatal(err)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() { r.cancel(); r.wg.Wait() })
	return r
}

// addWorker starts worker.Join in a goroutine; cancel stops it.
func (r *clusterRun) addWorker(name string, opt worker.JoinOptions) context.CancelFunc {
	ctx, cancel := context.WithCancel(r.ctx)
	if opt.Coordinator == "" {
		opt.Coordinator = r.cl.Addr()
	}
	opt.Name, opt.Secret = name, testSecret
	if opt.RingListen == "" {
		opt.RingListen = "127.0.0.1:0"
	}
	if opt.Log == nil {
		opt.Log = quiet()
	}
	if opt.Security == nil {
		opt.Security = r.sec
	}
	if opt.Open == nil {
		opt.Open = func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }
	}
	onStep := opt.OnStep
	opt.OnStep = func(w *worker.Worker, step int64) {
		r.mu.Lock()
		if r.sums[name] == nil {
			r.sums[name] = map[int64][]byte{}
		}
		r.sums[name][step] = w.Checksum()
		r.mu.Unlock()
		if onStep != nil {
			onStep(w, step)
		}
	}
	r.wg.Go(func() {
		defer cancel()
		err := worker.Join(ctx, opt)
		r.mu.Lock()
		r.errs[name] = err
		r.mu.Unlock()
	})
	return cancel
}

// run trains to the end (or an error) and waits for the workers.
func (r *clusterRun) run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := r.co.Run(ctx)
	r.wg.Wait()
	return err
}

// finish runs to the end and checks that every worker finished without
// error and every step of the epochs was committed; it returns the steps.
func (r *clusterRun) finish(epochs int) int64 {
	r.t.Helper()
	if err := r.run(); err != nil {
		r.t.Fatal(err)
	}
	for name, err := range r.errs {
		if err != nil {
			r.t.Errorf("worker %s: %v", name, err)
		}
	}
	total := int64(epochs * r.co.StepsPerEpoch())
	if r.co.Step() != total {
		r.t.Fatalf("step %d, want %d", r.co.Step(), total)
	}
	return total
}

// agree checks that worker name's replica equalled the committed state
// after every step in [from, to).
func (r *clusterRun) agree(name string, from, to int64) {
	r.t.Helper()
	for s := from; s < to; s++ {
		if got := r.sums[name][s]; !bytes.Equal(got, r.coSums[s]) {
			r.t.Errorf("step %d: %s checksum %x, coordinator %x", s, name, got, r.coSums[s])
		}
	}
}

// TestClusterEquivalence: two workers over gRPC keep bitwise identical
// replicas of the committed state after every step, and end bitwise equal to
// the same training with two in-process members: the network in between
// changes nothing.
func TestClusterEquivalence(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=2")
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 2}, coordinator.RemoteOptions{})
	run.addWorker("w0", worker.JoinOptions{})
	run.addWorker("w1", worker.JoinOptions{})
	total := run.finish(cfg.Epochs)
	run.agree("w0", 0, total)
	run.agree("w1", 0, total)
	two := startLocal(t, testConfig(t, t.TempDir(), "epochs=2"), coordinator.Options{}, false, 2)
	if err := two.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameState(t, two.st, run.st)
}

// TestClusterRefusesWrongSecret: a session that answers the challenge
// without the secret is refused, one that does not answer is cut off, and
// a worker with the wrong secret gives up at once with a clear error.
func TestClusterRefusesWrongSecret(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	sec := testTLS(t)
	cl, err := coordinator.StartRemote(cfg, coordinator.RemoteOptions{Listen: "127.0.0.1:0", Secret: testSecret, Security: sec, GossipProfile: "local", HelloTimeout: 300 * time.Millisecond, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(cluster.Outcome_FAILED, "test over")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := session(ctx, t, cl.Addr(), sec, "intruder", []byte("wrong")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong secret: got %v, want Unauthenticated", err)
	}
	// silent after the challenge
	cc, err := grpc.NewClient(cl.Addr(), grpc.WithTransportCredentials(sec.Creds(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	s, err := cluster.NewCoordinatorClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("silent session: got %v, want DeadlineExceeded", err)
	}
	start := time.Now()
	err = worker.Join(context.Background(), worker.JoinOptions{Coordinator: cl.Addr(), Name: "w", Secret: []byte("wrong"), Security: sec, Log: quiet(),
		Open: func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }})
	if !bytes.Contains([]byte(fmt.Sprint(err)), []byte("TINCT_CLUSTER_SECRET")) {
		t.Errorf("worker with the wrong secret: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a wrong secret took %v to report; it cannot be mended by retrying", d)
	}
}

// TestClusterTooFewWorkers: with fewer than min_workers the coordinator
// waits, then fails with a clear error — after checkpointing what was
// committed — and its worker exits with an error, not "finished".
func TestClusterTooFewWorkers(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "checkpoint_every=0", "epochs=4")
	var run *clusterRun
	var stopW1 context.CancelFunc
	run = startCluster(t, cfg, coordinator.Options{MinWorkers: 2, Wait: 300 * time.Millisecond, AfterStep: func(step int64) {
		if step == 3 {
			stopW1()
		}
	}}, coordinator.RemoteOptions{})
	run.addWorker("w0", worker.JoinOptions{})
	stopW1 = run.addWorker("w1", worker.JoinOptions{})
	err := run.run()
	if !errors.Is(err, coordinator.ErrTooFewWorkers) {
		t.Fatalf("got %v, want ErrTooFewWorkers", err)
	}
	if !errors.Is(run.errs["w0"], worker.ErrCoordinatorFailed) {
		t.Errorf("w0 got %v, want ErrCoordinatorFailed", run.errs["w0"])
	}
	if _, err := os.Stat(filepath.Join(cfg.Store, "step-000000003")); err != nil {
		t.Errorf("the committed state was not checkpointed before stopping: %v", err)
	}
}

// TestClusterJoinAndLeave: a worker joining mid-run is admitted at a step
// boundary with the exact committed state, and a worker leaving mid-run
// makes the ring re-form from the survivors; every step is committed once
// and the replicas that take part agree with the coordinator bitwise.
func TestClusterJoinAndLeave(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=4")
	connected := make(chan string, 8)
	var run *clusterRun
	var stopW1 context.CancelFunc
	var committed []int64
	run = startCluster(t, cfg, coordinator.Options{MinWorkers: 2, AfterStep: func(step int64) {
		committed = append(committed, step)
		switch step {
		case 2: // a newcomer: wait until it is connected; it joins at the next boundary
			run.addWorker("late", worker.JoinOptions{})
			for name := <-connected; name != "late"; name = <-connected {
			}
		case 5:
			stopW1()
		}
	}}, coordinator.RemoteOptions{OnConnect: func(name string) { connected <- name }})
	run.addWorker("w0", worker.JoinOptions{})
	stopW1 = run.addWorker("w1", worker.JoinOptions{})
	if err := run.run(); err != nil {
		t.Fatal(err)
	}
	total := int64(cfg.Epochs * run.co.StepsPerEpoch())
	for i, s := range committed {
		if s != int64(i+1) {
			t.Fatalf("committed steps %v", committed)
		}
	}
	if run.co.Step() != total || len(committed) != int(total) {
		t.Fatalf("step %d (%d commits), want %d", run.co.Step(), len(committed), total)
	}
	if got := run.co.Workers(); len(got) != 2 || got[0] != "w0" || got[1] != "late" {
		t.Errorf("final ring %v, want [w0 late]", got)
	}
	run.agree("w0", 0, total)
	// admitted at the first step boundary after the core learns of it: the
	// join arrives while step 3 is being committed, so from step 4 on
	run.agree("late", 3, total)
	run.agree("w1", 0, 5)
}

// TestClusterStalledWorkerRejoins: a worker that stalls past the step
// timeout is dropped; it joins again on its own with a fresh state and
// takes part until the end.
func TestClusterStalledWorkerRejoins(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=10")
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 2, StepTimeout: 500 * time.Millisecond, Backoff: 10 * time.Millisecond}, coordinator.RemoteOptions{})
	// steps of 100 ms leave the stalled worker time to come back
	run.addWorker("w0", worker.JoinOptions{Wait: 5 * time.Second, OnStep: func(*worker.Worker, int64) { time.Sleep(100 * time.Millisecond) }})
	stalled := false
	run.addWorker("slow", worker.JoinOptions{Wait: 5 * time.Second, OnStep: func(w *worker.Worker, step int64) {
		if step == 2 && !stalled {
			stalled = true
			time.Sleep(time.Second) // past the step timeout, once
		}
	}})
	total := run.finish(cfg.Epochs)
	if got := run.co.Workers(); len(got) != 2 {
		t.Errorf("final ring %v: the stalled worker did not rejoin", got)
	}
	run.agree("w0", 0, total)
	run.agree("slow", total-1, total)
}

// TestWorkerWaitsForCoordinator: a worker started before its coordinator
// waits and joins when it comes up; with nobody there, it gives up after
// --wait with a message naming the address.
func TestWorkerWaitsForCoordinator(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	sec := testTLS(t)
	err = worker.Join(context.Background(), worker.JoinOptions{Coordinator: addr, Name: "early", Secret: testSecret, Security: sec, Wait: 700 * time.Millisecond, Log: quiet(),
		Open: func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(addr)) || !bytes.Contains([]byte(err.Error()), []byte("unreachable")) {
		t.Fatalf("no coordinator: %v", err)
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 10*time.Second {
		t.Errorf("gave up after %v, want about --wait", d)
	}

	cfg := testConfig(t, t.TempDir(), "epochs=1")
	var run *clusterRun
	joined := make(chan struct{})
	go func() {
		time.Sleep(500 * time.Millisecond)
		run = startCluster(t, cfg, coordinator.Options{}, coordinator.RemoteOptions{Listen: addr, Security: sec})
		close(joined)
	}()
	werr := make(chan error, 1)
	go func() {
		werr <- worker.Join(context.Background(), worker.JoinOptions{Coordinator: addr, Name: "early", Secret: testSecret, Security: sec, Wait: 30 * time.Second, Log: quiet(),
			Open: func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }})
	}()
	<-joined
	if err := run.run(); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Errorf("worker started first: %v", err)
	}
}

// TestClusterChecksumMismatch: when every replica differs from the
// committed state after a step, the coordinator's own update is in doubt:
// it checkpoints and stops with an error, and tells the worker so.
func TestClusterChecksumMismatch(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	run := startCluster(t, cfg, coordinator.Options{}, coordinator.RemoteOptions{})
	// a hand-made worker: answers the protocol, but reports a wrong checksum
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, _, err := session(ctx, t, run.cl.Addr(), run.sec, "liar", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	var state *cluster.ReplicaState // the state it was given, sent back as its snapshot
	fake := make(chan *cluster.Stop, 1)
	go func() {
		defer close(fake)
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			switch b := m.Body.(type) {
			case *cluster.ToWorker_Stop:
				fake <- b.Stop
				cancel()
				return
			case *cluster.ToWorker_Setup:
				state = b.Setup.State
				err = s.Send(&cluster.FromWorker{Body: &cluster.FromWorker_Ready{Ready: &cluster.Ready{Generation: b.Setup.Generation}}})
			case *cluster.ToWorker_Task:
				rep := &cluster.Report{Generation: b.Task.Generation, Step: b.Task.Step, Count: int32(len(b.Task.Indices)), Checksum: []byte("wrong")}
				if b.Task.SendState {
					rep.State = state
				}
				err = s.Send(&cluster.FromWorker{Body: &cluster.FromWorker_Report{Report: rep}})
			}
			if err != nil {
				return
			}
		}
	}()
	err = run.run()
	if !errors.Is(err, control.ErrDiverged) {
		t.Fatalf("got %v, want ErrDiverged", err)
	}
	if st := <-fake; st == nil || st.Outcome != cluster.Outcome_FAILED {
		t.Errorf("the worker was told %v, want a FAILED stop", st)
	}
	if _, err := os.Stat(filepath.Join(cfg.Store, "step-000000001")); err != nil {
		t.Errorf("no checkpoint of the committed step before stopping: %v", err)
	}
}
