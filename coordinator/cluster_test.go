package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	pb "github.com/tinct/tinct/coordinator/clusterpb"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/worker"
)

var testSecret = []byte("test cluster secret")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startCluster starts a coordinator with a cluster service and n in-process
// workers that talk to it (and to each other) over gRPC on 127.0.0.1.
type clusterRun struct {
	co      *Coordinator
	cl      *Cluster
	mu      sync.Mutex
	sums    map[string]map[int64][]byte // worker → step → checksum after apply
	wg      sync.WaitGroup
	errs    chan error
	cancel  context.CancelFunc
	workCtx context.Context
}

func newClusterRun(t *testing.T, cfg *config.Config, data worker.Source, afterStep func(int64), onConnect ...func(string)) *clusterRun {
	t.Helper()
	var hook func(string)
	if len(onConnect) > 0 {
		hook = onConnect[0]
	}
	store, err := checkpoint.Open(cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := StartCluster(cfg, ClusterOptions{Listen: "127.0.0.1:0", Secret: testSecret, MinWorkers: 2, Wait: 20 * time.Second,
		StepTimeout: 20 * time.Second, SetupTimeout: 10 * time.Second, RingTimeout: 10 * time.Second, Log: quiet(), OnConnect: hook})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close("test over") })
	co, err := New(Options{Config: cfg, Train: data, Store: store, Log: quiet(), AfterStep: afterStep, Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &clusterRun{co: co, cl: cl, sums: map[string]map[int64][]byte{}, errs: make(chan error, 8), cancel: cancel, workCtx: ctx}
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	return r
}

func (r *clusterRun) addWorker(name string, data worker.Source) context.CancelFunc {
	ctx, cancel := context.WithCancel(r.workCtx)
	r.wg.Go(func() {
		defer cancel()
		err := worker.Join(ctx, worker.JoinOptions{Coordinator: r.cl.Addr(), Name: name, Secret: testSecret, RingListen: "127.0.0.1:0", Log: quiet(),
			Open: func(context.Context, *config.Config) (worker.Source, error) { return data, nil },
			OnStep: func(w *worker.Worker, step int64) {
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.sums[name] == nil {
					r.sums[name] = map[int64][]byte{}
				}
				r.sums[name][step] = w.Checksum()
			}})
		if !errors.Is(err, worker.ErrFinished) && ctx.Err() == nil {
			r.errs <- fmt.Errorf("worker %s: %w", name, err)
		}
	})
	return cancel
}

// TestClusterEquivalence: two workers over real gRPC keep bitwise identical
// replicas of the coordinator's copy after every step, and the reduced
// gradient is the mean of the per-shard gradients computed in one process.
func TestClusterEquivalence(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=2")
	data := synthetic{n: 10, size: 8}

	// the expected first step, in one process: the two shares' gradients, reduced
	ref, err := New(Options{Config: cfg, Train: data, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	idx := dataset.Permutation(data.Len(), cfg.Seed, 0)[:cfg.BatchSize]
	var results []worker.Result
	for i, share := range split(idx, 2) {
		w, _ := worker.New(fmt.Sprint("ref", i), ref.Net().Config, data)
		if err := w.Load(ref.state()); err != nil {
			t.Fatal(err)
		}
		res, err := w.Compute(context.Background(), worker.Task{Step: 0, Epoch: 0, Indices: share, Seed: cfg.Seed, Flip: cfg.Flip})
		if err != nil {
			t.Fatal(err)
		}
		res.Grads = append([]float32(nil), res.Grads...)
		res.Buffers = append([]float32(nil), res.Buffers...)
		results = append(results, res)
	}
	wantGrad, wantBufs := make([]float32, len(ref.grad)), make([]float32, len(ref.bufs))
	reduce(results, wantGrad, wantBufs)

	coSums := map[int64][]byte{}
	var run *clusterRun
	checked := false
	run = newClusterRun(t, cfg, data, func(step int64) {
		coSums[step-1] = worker.ChecksumOf(run.co.Net())
		if step == 1 {
			checked = true
			closeEnough(t, "gradient", run.co.grad, wantGrad)
			closeEnough(t, "buffers", run.co.bufs, wantBufs)
			if w, r := run.co.gauges.workers.Value(), run.co.gauges.reduceSeconds.Value(); w != 2 || !(r > 0) {
				t.Errorf("metrics after step 1: workers %g, all-reduce seconds %g", w, r)
			}
		}
	})
	run.addWorker("w0", data)
	run.addWorker("w1", data)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := run.co.Run(ctx); err != nil {
		t.Fatal(err)
	}
	run.cl.Close("done")
	run.wg.Wait()
	close(run.errs)
	for err := range run.errs {
		t.Error(err)
	}
	total := int64(cfg.Epochs * run.co.StepsPerEpoch())
	if run.co.Step() != total {
		t.Fatalf("step %d, want %d", run.co.Step(), total)
	}
	if !checked {
		t.Error("the first step's gradient was not checked")
	}
	for _, name := range []string{"w0", "w1"} {
		for s := range total {
			if got := run.sums[name][s]; !bytes.Equal(got, coSums[s]) {
				t.Errorf("step %d: %s checksum %x, coordinator %x", s, name, got, coSums[s])
			}
		}
	}
	// the run equals a single-machine run bit for bit? Not required: the
	// reduction order differs. But the coordinator's copy must have trained.
	if run.co.Net().Params[0] == ref.Net().Params[0] && run.co.Net().Params[1] == ref.Net().Params[1] {
		t.Error("weights did not change")
	}
}

func closeEnough(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		scale := math.Max(math.Abs(float64(want[i])), 1e-3)
		worst = math.Max(worst, d/scale)
	}
	if worst > 1e-6 {
		t.Errorf("%s: worst relative difference %g > 1e-6", what, worst)
	}
}

// TestClusterRefusesWrongSecret: a call without the secret is refused.
func TestClusterRefusesWrongSecret(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cl, err := StartCluster(cfg, ClusterOptions{Listen: "127.0.0.1:0", Secret: testSecret, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close("test over")
	for _, creds := range []grpc.DialOption{grpc.WithPerRPCCredentials(pb.Creds{Secret: []byte("wrong")}), grpc.EmptyDialOption{}} {
		cc, err := grpc.NewClient(cl.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), creds)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := pb.NewCoordinatorClient(cc).Session(ctx)
		if err == nil {
			_ = s.Send(&pb.FromWorker{Body: &pb.FromWorker_Hello{Hello: &pb.Hello{Name: "intruder"}}})
			_, err = s.Recv()
		}
		cancel()
		cc.Close()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("got %v, want Unauthenticated", err)
		}
	}
	if w := cl.alive(); len(w) != 0 {
		t.Errorf("workers %v admitted", names(w))
	}
}

// TestClusterTooFewWorkers: with fewer than min_workers the coordinator
// waits, then fails with a clear error.
func TestClusterTooFewWorkers(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	data := synthetic{n: 10, size: 8}
	cl, err := StartCluster(cfg, ClusterOptions{Listen: "127.0.0.1:0", Secret: testSecret, MinWorkers: 2, Wait: 300 * time.Millisecond, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close("test over")
	co, err := New(Options{Config: cfg, Train: data, Log: quiet(), Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	err = co.Run(context.Background())
	if !errors.Is(err, ErrTooFewWorkers) {
		t.Fatalf("got %v, want ErrTooFewWorkers", err)
	}
}

// TestClusterJoinAndLeave: a worker joining mid-run is admitted at a step
// boundary with the exact committed state, and a worker leaving mid-run
// makes the ring re-form from the survivors; every step is committed once
// and the replicas that take part agree with the coordinator bitwise.
func TestClusterJoinAndLeave(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=4")
	data := synthetic{n: 10, size: 8}
	connected := make(chan string, 4)
	coSums := map[int64][]byte{}
	var run *clusterRun
	var stopW1 context.CancelFunc
	var committed []int64
	run = newClusterRun(t, cfg, data, func(step int64) {
		committed = append(committed, step)
		coSums[step-1] = worker.ChecksumOf(run.co.Net())
		switch step {
		case 2: // a newcomer: wait until it is connected; it joins the next step
			run.addWorker("late", data)
			for name := <-connected; name != "late"; name = <-connected {
			}
		case 5:
			stopW1()
		}
	}, func(name string) { connected <- name })
	run.addWorker("w0", data)
	stopW1 = run.addWorker("w1", data)
	<-connected
	<-connected
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := run.co.Run(ctx); err != nil {
		t.Fatal(err)
	}
	run.cl.Close("done")
	run.wg.Wait()
	close(run.errs)
	for err := range run.errs {
		t.Error(err)
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
	if got := run.cl.Workers(); len(got) != 2 || got[0] != "w0" || got[1] != "late" {
		t.Errorf("final ring %v, want [w0 late]", got)
	}
	check := func(name string, from, to int64) {
		for s := from; s < to; s++ {
			if got := run.sums[name][s]; !bytes.Equal(got, coSums[s]) {
				t.Errorf("step %d: %s checksum %x, coordinator %x", s, name, got, coSums[s])
			}
		}
	}
	check("w0", 0, total)
	check("late", 2, total) // admitted at the boundary after step 2
	check("w1", 0, 5)
}

// TestClusterChecksumMismatch: a worker whose replica differs after a step
// stops training with an error naming it.
func TestClusterChecksumMismatch(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	data := synthetic{n: 10, size: 8}
	cl, err := StartCluster(cfg, ClusterOptions{Listen: "127.0.0.1:0", Secret: testSecret, Wait: 10 * time.Second, StepTimeout: 10 * time.Second, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close("test over")
	co, err := New(Options{Config: cfg, Train: data, Log: quiet(), Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	// a hand-made worker: answers the protocol, but reports a wrong checksum
	cc, err := grpc.NewClient(cl.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(pb.Creds{Secret: testSecret}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := pb.NewCoordinatorClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fake := make(chan error, 1)
	go func() {
		fake <- func() error {
			if err := s.Send(&pb.FromWorker{Body: &pb.FromWorker_Hello{Hello: &pb.Hello{Name: "liar"}}}); err != nil {
				return err
			}
			n := len(co.grad) + len(co.bufs)
			for {
				m, err := s.Recv()
				if err != nil {
					return nil // the coordinator ended the session
				}
				switch b := m.Body.(type) {
				case *pb.ToWorker_Stop:
					cancel() // ends the session, as worker.Join does
					return nil
				case *pb.ToWorker_Setup:
					err = s.Send(&pb.FromWorker{Body: &pb.FromWorker_Ready{Ready: &pb.Ready{Generation: b.Setup.Generation}}})
				case *pb.ToWorker_Task:
					err = s.Send(&pb.FromWorker{Body: &pb.FromWorker_Report{Report: &pb.Report{Generation: b.Task.Generation, Step: b.Task.Step,
						Count: int32(len(b.Task.Indices)), Checksum: []byte("wrong"), Update: pb.Floats(make([]float32, n))}}})
				}
				if err != nil {
					return err
				}
			}
		}()
	}()
	err = co.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "worker liar's replica differs") {
		t.Fatalf("got %v, want a checksum mismatch naming the worker", err)
	}
	cl.Close("test over")
	if err := <-fake; err != nil {
		t.Error(err)
	}
}
