package allreduce

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// unetParams is the length of the U-Net's flat gradient (docs/design.md §1).
const unetParams = 1_950_659

// benchChunk is the chunk size the benchmarks use: DefaultChunkBytes, or
// TINCT_ALLREDUCE_CHUNK (bytes) to tune it.
func benchChunk(b *testing.B) int {
	if s := os.Getenv("TINCT_ALLREDUCE_CHUNK"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("TINCT_ALLREDUCE_CHUNK=%q: %v", s, err)
		}
		return n
	}
	return DefaultChunkBytes
}

// BenchmarkAllReduce reduces the U-Net's gradient (7.8 MB of float32) over
// loopback gRPC, all ranks in this process, each with its own server.
// ms/op is the mean wall time of one all-reduce and p50-ms the median;
// bus-GB/s is the bus bandwidth 2·(n−1)/n · bytes / mean time (as
// nccl-tests report it); cpu-ms/op is the CPU time (user+system) of all
// ranks together per all-reduce, a figure that shifts less than wall time
// on a busy machine. bench/allreduce_gloo.py measures the same for gloo.
//
//	go test -run '^$' -bench BenchmarkAllReduce -benchtime 50x ./allreduce
func BenchmarkAllReduce(b *testing.B) {
	for _, n := range []int{2, 3, 4} {
		b.Run(fmt.Sprintf("world=%d", n), func(b *testing.B) {
			benchRing(b, n, unetParams, benchChunk(b))
		})
	}
}

// BenchmarkAllReduceChunk sweeps the pipeline chunk size at world 2 and 4.
func BenchmarkAllReduceChunk(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, kib := range []int{32, 64, 128, 256, 512, 1024, 4096} {
			b.Run(fmt.Sprintf("world=%d/chunk=%dKiB", n, kib), func(b *testing.B) {
				benchRing(b, n, unetParams, kib<<10)
			})
		}
	}
}

func benchRing(b *testing.B, n, length, chunk int) {
	rings := startRings(b, n, func(c *Config) { c.ChunkBytes = chunk; c.Timeout = time.Minute })
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = make([]float32, length)
		for j := range vecs[i] {
			vecs[i][j] = float32(j%1000) * 1e-3
		}
	}
	step := int64(0)
	reduce := func() {
		for i, err := range onAll(rings, func(i int, r *Ring) error {
			return r.AllReduce(context.Background(), step, vecs[i])
		}) {
			if err != nil {
				b.Fatalf("rank %d: %v", i, err)
			}
		}
		step++
	}
	reduce() // warm up connections and buffers
	b.SetBytes(int64(4 * length))
	var times []float64
	cpu0 := cpuSeconds()
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		reduce()
		times = append(times, time.Since(t0).Seconds())
	}
	mean := time.Since(start).Seconds() / float64(b.N)
	cpu := (cpuSeconds() - cpu0) / float64(b.N)
	slices.Sort(times)
	busBytes := 2 * float64(n-1) / float64(n) * float64(4*length)
	b.ReportMetric(mean*1e3, "ms/op")
	b.ReportMetric(times[len(times)/2]*1e3, "p50-ms")
	b.ReportMetric(busBytes/mean/1e9, "bus-GB/s")
	b.ReportMetric(cpu*1e3, "cpu-ms/op")
}

// cpuSeconds is the user+system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
