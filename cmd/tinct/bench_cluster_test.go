package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestBenchCluster runs tinct bench cluster on 2 worker processes of a tiny
// network for a few steps: it prints its table and JSON, and leaves no
// child process and no temporary folder behind.
func TestBenchCluster(t *testing.T) {
	t.Setenv(execEnv, "1") // the children re-execute this test binary as tinct
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	var (
		mu   sync.Mutex
		pids []int
	)
	benchClusterStarted = func(pid int) {
		mu.Lock()
		pids = append(pids, pid)
		mu.Unlock()
	}
	t.Cleanup(func() { benchClusterStarted = nil })
	jsonPath := filepath.Join(t.TempDir(), "bench.json")

	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"bench", "cluster", "--workers", "2", "--widths", "4,8", "--image-size", "8", "--steps", "4", "--warmup", "2", "--snapshot-every", "2",
		"--ring-reps", "3", "--timeout", "60s", "--json", jsonPath})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	t.Logf("output:\n%s", out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "step / bare ring") || !strings.Contains(lines[1], "[4,8]") {
		t.Errorf("no table in the output:\n%s", out.String())
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rows []clusterBenchRow
	if err := json.Unmarshal(data, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Compute != "real" || rows[1].Compute != "none" {
		t.Errorf("JSON rows: %s (want a real and a no-compute row)", data)
	}
	for _, r := range rows {
		if r.Workers != 2 || r.StepMs <= 0 || r.BareRingMs <= 0 || r.Ratio <= 0 || len(r.AllRuns) != 1 {
			t.Errorf("JSON row: %+v", r)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if len(pids) != 10 { // per compute mode: coordinator, 2 workers, 2 ring members
		t.Errorf("started %d children, want 10", len(pids))
	}
	for _, pid := range pids {
		// each child ran in a process group of its own: neither it nor
		// anything it started may be left
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d's process group is still there (kill -0: %v)", pid, err)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	left, err := filepath.Glob(filepath.Join(tmp, "tinct-bench-cluster-*"))
	if err != nil || len(left) != 0 {
		t.Errorf("temporary folders left: %v (%v)", left, err)
	}
}
