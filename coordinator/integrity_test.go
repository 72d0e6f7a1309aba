package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/worker"
)

// identified is the synthetic set with a manifest and a folder, as a
// prepared set has: what a worker compares with the coordinator's.
type identified struct {
	synthetic
	man *dataset.Manifest
	dir string
}

func (s identified) Manifest() *dataset.Manifest { return s.man }
func (s identified) Dir() string                 { return s.dir }

// manifestOf is a manifest for a set of n records whose single shard has
// the given SHA-256.
func manifestOf(n, size int, sha string) *dataset.Manifest {
	return &dataset.Manifest{Format: dataset.FormatName, Version: dataset.FormatVersion, ImageSize: size, RecordBytes: 4 * size * size, RecordsPerShard: n,
		Splits: map[string]dataset.SplitInfo{dataset.SplitTrain: {Count: n, Shards: []dataset.ShardInfo{{File: "train-00000.bin", Records: n, Bytes: int64(n * 4 * size * size), SHA256: sha}}}}}
}

// refusedWorker runs a cluster whose coordinator trains on the set the
// manifest ours describes (nil: a set without one), with a worker w0 that
// opens the same and a worker w1 that opens theirs; it returns w1's error, how long w1 took to give up, and the
// steps w1 computed.
func refusedWorker(t *testing.T, ours *dataset.Manifest, theirs dataset.Examples) (error, time.Duration, int) {
	t.Helper()
	cfg := testConfig(t, t.TempDir(), "epochs=2")
	var clopt coordinator.RemoteOptions
	var w0 worker.JoinOptions
	if ours != nil {
		clopt.DatasetHash, clopt.DatasetPath = ours.ContentHash(), "coordhost:/ours/set"
		w0.Open = func(context.Context, *config.Config) (dataset.Examples, error) {
			return identified{data, ours, "/ours/set"}, nil
		}
	}
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 1}, clopt)
	run.addWorker("w0", w0)
	computed := 0
	start := time.Now()
	var took time.Duration
	run.addWorker("w1", worker.JoinOptions{Wait: time.Minute,
		Open:   func(context.Context, *config.Config) (dataset.Examples, error) { return theirs, nil },
		OnStep: func(*worker.Worker, int64) { computed++ },
		OnJoined: func(joined bool) {
			if !joined {
				took = time.Since(start)
			}
		}})
	if err := run.run(); err != nil {
		t.Fatalf("the run with a refused worker: %v", err)
	}
	if run.errs["w0"] != nil {
		t.Errorf("w0: %v", run.errs["w0"])
	}
	return run.errs["w1"], took, computed
}

// TestClusterWorkerOtherDataset: a worker whose training set has another
// content hash than the coordinator's (another valid set of the same size
// at the same path: a per-worker cache, storage that is not really shared)
// is refused before it computes anything, at once, with both hashes and
// both paths; the run goes on without it.
func TestClusterWorkerOtherDataset(t *testing.T) {
	ours := manifestOf(data.n, data.size, strings.Repeat("a", 64))
	theirs := identified{synthetic: data, man: manifestOf(data.n, data.size, strings.Repeat("b", 64)), dir: "/theirs/set"}
	err, took, computed := refusedWorker(t, ours, theirs)
	if err == nil {
		t.Fatal("a worker with another dataset took part in the run")
	}
	for _, want := range []string{ours.ContentHash(), theirs.man.ContentHash(), "coordhost:/ours/set", ":/theirs/set", "not the coordinator's"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not name %q", err, want)
		}
	}
	if computed != 0 {
		t.Errorf("the refused worker computed %d steps", computed)
	}
	if took > 10*time.Second {
		t.Errorf("the refused worker gave up after %v; the reason cannot change, so it should exit at once", took)
	}
	// the same set (same content hash, wherever it lies) is accepted
	same := identified{synthetic: data, man: manifestOf(data.n, data.size, strings.Repeat("a", 64)), dir: "/elsewhere"}
	same.man.Source = "another source folder" // not content
	if err, _, computed := refusedWorker(t, ours, same); err != nil || computed == 0 {
		t.Errorf("a worker with the same set: %v, %d steps computed", err, computed)
	}
}

// TestClusterWorkerOtherNetwork: a worker that would build another network
// than the coordinator's (here: its set has another image size) is refused
// before it computes anything, naming both.
func TestClusterWorkerOtherNetwork(t *testing.T) {
	err, _, computed := refusedWorker(t, nil, synthetic{n: data.n, size: 2 * data.size})
	if err == nil {
		t.Fatal("a worker with another network took part in the run")
	}
	for _, want := range []string{"another network", "image_size=8 widths=[4 8]", "image_size=16 widths=[4 8]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not name %q", err, want)
		}
	}
	if computed != 0 {
		t.Errorf("the refused worker computed %d steps", computed)
	}
}

// joinAlone runs worker.Join with a long --wait against addr and returns
// its error and how long it took.
func joinAlone(t *testing.T, addr, name string, sec *cluster.Security) (error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	err := worker.Join(ctx, worker.JoinOptions{Coordinator: addr, Name: name, Secret: testSecret, Security: sec, Wait: 30 * time.Second, Log: quiet(),
		Open: func(context.Context, *config.Config) (dataset.Examples, error) { return data, nil }})
	return err, time.Since(start)
}

// TestWorkerTLSMismatchExitsAtOnce: a plaintext worker against a TLS
// coordinator, or a TLS worker against a plaintext one, is told so at
// once and gives up; it does not retry for the whole --wait and then call
// the coordinator unreachable.
func TestWorkerTLSMismatchExitsAtOnce(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	sec := testTLS(t)
	for _, tc := range []struct {
		name          string
		coord, worker *cluster.Security
		want          string
	}{
		{"plaintext worker, TLS coordinator", sec, cluster.Plaintext(), "speaks TLS, but this worker runs with --plaintext"},
		{"TLS worker, plaintext coordinator", cluster.Plaintext(), sec, "tls:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := coordinator.StartRemote(cfg, coordinator.RemoteOptions{Listen: "127.0.0.1:0", Secret: testSecret, Security: tc.coord, GossipProfile: "local", Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close(cluster.Outcome_FAILED, "test over")
			err, took := joinAlone(t, cl.Addr(), "w", tc.worker)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "unreachable") {
				t.Errorf("got %v, want an error saying %q", err, tc.want)
			}
			if took > 5*time.Second {
				t.Errorf("took %v to give up; a TLS mismatch cannot be mended by retrying", took)
			}
		})
	}
}

// TestWorkerDuplicateNameExitsAtOnce: a second live worker with a name in
// use is refused after the coordinator's DuplicateWait, says so and
// exits; the same name from a restarted worker whose old session ended
// is let in.
func TestWorkerDuplicateNameExitsAtOnce(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "epochs=1000")
	run := startCluster(t, cfg, coordinator.Options{MinWorkers: 1}, coordinator.RemoteOptions{DuplicateWait: time.Second})
	connected := make(chan struct{}, 1)
	stopW0 := run.addWorker("w0", worker.JoinOptions{OnJoined: func(joined bool) {
		if joined {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
	}})
	done := make(chan error, 1)
	go func() { done <- run.co.Run(run.ctx) }()
	<-connected
	err, took := joinAlone(t, run.cl.Addr(), "w0", run.sec)
	if err == nil || !strings.Contains(err.Error(), "already in the cluster") || !strings.Contains(err.Error(), "--name") {
		t.Errorf("a second worker named w0: %v", err)
	}
	if took > 6*time.Second {
		t.Errorf("took %v to give up; a duplicate name cannot be mended by retrying", took)
	}
	// w0 goes away; a new process of that name is admitted
	stopW0()
	w0 := run.addWorker("w0", worker.JoinOptions{OnJoined: func(joined bool) {
		if joined {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
	}})
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		t.Error("a restarted w0 was not admitted")
	}
	w0()
	run.cancel()
	<-done
}
