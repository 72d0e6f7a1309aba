package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/worker"
)

// pipelined is the test configuration with the pipeline of the defaults
// (steps sent ahead, the coordinator's state only every few steps and at
// epoch ends): five steps an epoch, snapshots after steps 3, 5, 6, 9, 10, …
var pipelined = []string{"batch_size=2", "snapshot_every=3", "steps_in_flight=2"}

// stepwise is the same run sent one step at a time with a snapshot after
// every step: the previous protocol's cadence.
var stepwise = []string{"batch_size=2", "snapshot_every=1", "steps_in_flight=1"}

// committedOnce records AfterStep and checks each step came once, in order.
func committedOnce(t *testing.T, got []int64, total int64) {
	t.Helper()
	if int64(len(got)) != total {
		t.Fatalf("%d steps committed, want %d: %v", len(got), total, got)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("committed steps %v: not each once in order", got)
		}
	}
}

// TestPipelineMatchesStepwise: with steps in flight and the coordinator's
// copy taken only every few steps, training ends bitwise where sending one
// step at a time and committing each ends — for one member and for two.
func TestPipelineMatchesStepwise(t *testing.T) {
	for _, members := range []int{1, 2} {
		t.Run(fmt.Sprint(members, " members"), func(t *testing.T) {
			var steps []int64
			p := startLocal(t, testConfig(t, t.TempDir(), pipelined...), coordinator.Options{AfterStep: func(s int64) { steps = append(steps, s) }}, false, members)
			if err := p.co.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			committedOnce(t, steps, 15)
			s := startLocal(t, testConfig(t, t.TempDir(), stepwise...), coordinator.Options{}, false, members)
			if err := s.co.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameState(t, s.st, p.st)
			for _, m := range p.members {
				if got, want := m.W.StateChecksum(), p.st.Checksum(); string(got) != string(want) {
					t.Errorf("%s: the replica's whole state (EMA and Adam included) differs from the committed state", m.Name())
				}
			}
		})
	}
}

// TestPipelineExactResume: a pipelined run interrupted anywhere — the
// coordinator lagging the replicas — resumes from its checkpoint and ends
// bitwise where an uninterrupted run ends.
func TestPipelineExactResume(t *testing.T) {
	full := startLocal(t, testConfig(t, t.TempDir(), pipelined...), coordinator.Options{}, false, 1)
	if err := full.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, stopAt := range []int64{1, 4, 7, 11} {
		t.Run(fmt.Sprint("stop after step ", stopAt), func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), pipelined...)
			ctx, cancel := context.WithCancel(context.Background())
			first := startLocal(t, cfg, coordinator.Options{AfterStep: func(step int64) {
				if step == stopAt {
					cancel()
				}
			}}, false, 1)
			if err := first.co.Run(ctx); !errors.Is(err, coordinator.ErrInterrupted) {
				t.Fatalf("interrupted run: %v", err)
			}
			resumed := startLocal(t, cfg, coordinator.Options{}, true, 1)
			if resumed.co.Step() != first.co.Step() || resumed.co.Step() < stopAt {
				t.Fatalf("resumed at step %d, the interrupted run committed %d (stopped after %d)", resumed.co.Step(), first.co.Step(), stopAt)
			}
			if err := resumed.co.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameState(t, full.st, resumed.st)
		})
	}
}

// TestClusterPipelineEquivalence: two workers over gRPC with steps in
// flight end bitwise equal to two in-process members sent one step at a
// time, every step committed once.
func TestClusterPipelineEquivalence(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), append(pipelined, "epochs=2")...)
	var steps []int64
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 2, AfterStep: func(s int64) { steps = append(steps, s) }}, coordinator.RemoteOptions{})
	run.addWorker("w0", worker.JoinOptions{})
	run.addWorker("w1", worker.JoinOptions{})
	total := run.finish(cfg.Epochs)
	committedOnce(t, steps, total)
	// at the end the coordinator holds the last snapshot: the replicas'
	run.agree("w0", total-1, total)
	run.agree("w1", total-1, total)
	two := startLocal(t, testConfig(t, t.TempDir(), append(stepwise, "epochs=2")...), coordinator.Options{}, false, 2)
	if err := two.co.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameState(t, two.st, run.st)
}

// TestClusterWorkerDiesWhileCoordinatorLags: a worker dies when the
// replicas have agreed steps the coordinator has no copy of; those steps
// are given up and computed again from the committed state by the
// survivors, and still every step is committed once, in order, and the
// survivors end equal to the committed state.
func TestClusterWorkerDiesWhileCoordinatorLags(t *testing.T) {
	// three steps an epoch, a share of one image each, snapshots at the
	// epochs' ends; the ring starts with all three (min_workers 3)
	cfg := testConfig(t, t.TempDir(), "batch_size=3", "snapshot_every=10", "steps_in_flight=2", "epochs=2")
	var steps []int64
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 3, AfterStep: func(s int64) { steps = append(steps, s) }}, coordinator.RemoteOptions{})
	var mu sync.Mutex
	computed := map[int64]int{}
	run.addWorker("w0", worker.JoinOptions{OnStep: func(_ *worker.Worker, step int64) {
		mu.Lock()
		computed[step]++
		mu.Unlock()
	}})
	run.addWorker("w1", worker.JoinOptions{})
	var stop context.CancelFunc
	killed := false
	stop = run.addWorker("w2", worker.JoinOptions{OnStep: func(_ *worker.Worker, step int64) {
		// after step 1: steps 0 and 1 are the replicas', the
		// coordinator's copy is still step 0's start (the first
		// snapshot comes after step 2); a replacement joins
		if step == 1 && !killed {
			killed = true
			stop()
			run.addWorker("w3", worker.JoinOptions{})
		}
	}})
	if err := run.run(); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w0", "w1", "w3"} {
		if err := run.errs[w]; err != nil {
			t.Errorf("worker %s: %v", w, err)
		}
	}
	total := int64(cfg.Epochs * run.co.StepsPerEpoch())
	committedOnce(t, steps, total)
	if !killed {
		t.Fatal("w2 was never killed")
	}
	mu.Lock()
	defer mu.Unlock()
	// step 0 was agreed (w2 went on to step 1) and never in a snapshot:
	// given up with w2 and computed again (step 1 too, unless w2's death
	// broke w0's ring call of it)
	if computed[0] != 2 || computed[1] < 1 {
		t.Errorf("w0 computed steps %v; want step 0 twice", computed)
	}
	run.agree("w0", total-1, total)
	run.agree("w1", total-1, total)
	if got := run.co.Workers(); len(got) != 3 || got[2] != "w3" {
		t.Errorf("final ring %v, want the two survivors and w3", got)
	}
}

// TestSetupCarriesTheStep: a worker admitted mid-run is told the step its
// state is at (its log's "ring generation … step=N"); Setup.step used to be
// left 0.
func TestSetupCarriesTheStep(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=6")
	late := make(chan struct{})
	var once sync.Once
	run := startCluster(t, cfg, coordinator.Options{AfterStep: func(s int64) {
		if s == 3 {
			once.Do(func() { close(late) })
		}
	}}, coordinator.RemoteOptions{})
	run.addWorker("w0", worker.JoinOptions{})
	got := make(chan int64, 1)
	go func() {
		<-late
		ctx, cancel := context.WithCancel(run.ctx)
		defer cancel()
		s, _, err := session(ctx, t, run.cl.Addr(), run.sec, "late", testSecret)
		if err != nil {
			got <- -1
			return
		}
		for {
			m, err := s.Recv()
			if err != nil {
				got <- -1
				return
			}
			if st := m.GetSetup(); st != nil {
				got <- st.Step // then leave: the run goes on without it
				return
			}
		}
	}()
	if err := run.run(); err != nil {
		t.Fatal(err)
	}
	if step := <-got; step < 3 {
		t.Errorf("the late worker's setup said step %d; it joined after step 3 was committed", step)
	}
}
