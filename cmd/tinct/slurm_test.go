package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/worker"
)

func TestSlurmFirstNode(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"node1":              "node1",
		"node1,node2":        "node1",
		"gpu[03-04,07],cpu1": "gpu03",
		"gpu[7]":             "gpu7",
		"a-b[1,2]":           "a-b1",
	} {
		if got := slurmFirstNode(in); got != want {
			t.Errorf("slurmFirstNode(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWorkerSlurmDefaults: under Slurm a worker's name and its coordinator
// come from the job's environment; explicit flags win.
func TestWorkerSlurmDefaults(t *testing.T) {
	env := map[string]string{
		"SLURM_JOB_ID":       "4242",
		"SLURM_STEP_ID":      "3",
		"SLURM_PROCID":       "1",
		"SLURM_JOB_NODELIST": "gpu[01-02]",
	}
	getenv := func(k string) string { return env[k] }
	ctx := context.Background()

	opt := worker.JoinOptions{Wait: time.Second}
	if err := workerDefaults(ctx, &opt, "", getenv); err != nil {
		t.Fatal(err)
	}
	if opt.Name != "slurm-4242.3-1" || opt.Coordinator != "gpu01:7070" {
		t.Errorf("name %q coordinator %q, want slurm-4242.3-1 gpu01:7070", opt.Name, opt.Coordinator)
	}

	// the address file wins over the node list; --name and --coordinator over both
	file := filepath.Join(t.TempDir(), "coordinator")
	if err := writeAddressFile(file, "gpu02:40123"); err != nil {
		t.Fatal(err)
	}
	opt = worker.JoinOptions{Wait: time.Second}
	if err := workerDefaults(ctx, &opt, file, getenv); err != nil {
		t.Fatal(err)
	}
	if opt.Coordinator != "gpu02:40123" {
		t.Errorf("coordinator %q from the file, want gpu02:40123", opt.Coordinator)
	}
	opt = worker.JoinOptions{Wait: time.Second, Name: "w0", Coordinator: "10.0.0.1:7070"}
	if err := workerDefaults(ctx, &opt, file, getenv); err != nil {
		t.Fatal(err)
	}
	if opt.Name != "w0" || opt.Coordinator != "10.0.0.1:7070" {
		t.Errorf("flags overridden: name %q coordinator %q", opt.Name, opt.Coordinator)
	}

	// outside Slurm: HOSTNAME-PID, and a coordinator is required
	none := func(string) string { return "" }
	opt = worker.JoinOptions{Wait: time.Second}
	if err := workerDefaults(ctx, &opt, "", none); err == nil || !strings.Contains(err.Error(), "--coordinator") {
		t.Errorf("no coordinator anywhere: err %v", err)
	}
	opt = worker.JoinOptions{Wait: time.Second, Coordinator: "127.0.0.1:7070"}
	if err := workerDefaults(ctx, &opt, "", none); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if !strings.HasPrefix(opt.Name, host+"-") {
		t.Errorf("name %q outside Slurm, want %s-PID", opt.Name, host)
	}
}

// TestAddressFileWaits: a worker started before its coordinator waits for
// the address file, up to --wait.
func TestAddressFileWaits(t *testing.T) {
	file := filepath.Join(t.TempDir(), "coordinator")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = writeAddressFile(file, "node1:7070")
	}()
	addr, err := readAddressFile(context.Background(), file, 10*time.Second)
	if err != nil || addr != "node1:7070" {
		t.Fatalf("readAddressFile = %q, %v", addr, err)
	}
	if _, err := readAddressFile(context.Background(), filepath.Join(t.TempDir(), "never"), 300*time.Millisecond); err == nil {
		t.Fatal("no file: want an error after --wait")
	}
}
