package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tinct/tinct/allreduce"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/model"
)

// BenchmarkHostPrep is a worker's host work per 128² example before the
// forward pass that depends on the size alone: the noise and the network's
// input (model.NoisyExample). The default HostPerImage is this plus a
// guess for reading the example (docs/sim.md).
//
//	go test -run '^$' -bench HostPrep -benchtime 200x ./sim
func BenchmarkHostPrep(b *testing.B) {
	const s = 128
	x0, gray, eps, in := make([]float32, 3*s*s), make([]float32, s*s), make([]float32, 3*s*s), make([]float32, 4*s*s)
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		model.NoisyExample(x0, gray, eps, in, rng)
	}
}

// BenchmarkWorkerApply is a CPU worker's serial work after the all-reduce:
// apply the update to its replica (Adam, BN buffers) and checksum it — the
// Apply of the calibration runs (docs/sim.md).
//
//	go test -run '^$' -bench WorkerApply -benchtime 10x ./sim
func BenchmarkWorkerApply(b *testing.B) {
	u, err := model.New(model.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	u.Init(rand.New(rand.NewPCG(1, 1)))
	opt := model.NewAdam(u.NumParams(), 1e-4)
	grad := make([]float32, u.NumParams())
	bufs := u.Buffers(nil)
	for i := range grad {
		grad[i] = 1e-3
	}
	var tracked int64
	for b.Loop() {
		tracked++
		u.Apply(opt, grad, bufs, tracked)
		_ = cluster.Checksum(u)
	}
}

// BenchmarkRingHop is the ring's cost per phase for a small vector (the
// BN buffers, 2,880 floats) on loopback, where bandwidth does not matter:
// ns/op ÷ 2(world−1) is one hop's latency plus per-message overhead of
// allreduce over gRPC, all ranks in this process (the loopback Latency +
// Overhead of the calibration, docs/sim.md).
//
//	go test -run '^$' -bench RingHop -benchtime 300x ./sim
func BenchmarkRingHop(b *testing.B) {
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("world=%d", n), func(b *testing.B) {
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			secret := []byte("0123456789abcdef0123456789abcdef")
			rings := make([]*allreduce.Ring, n)
			for i := range n {
				r, err := allreduce.Listen(allreduce.Config{Rank: i, Size: n, Listen: "127.0.0.1:0", Secret: secret, Timeout: 20 * time.Second, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				rings[i] = r
			}
			for i, r := range rings {
				if err := r.Connect(context.Background(), rings[(i+1)%n].Addr()); err != nil {
					b.Fatal(err)
				}
			}
			vecs := make([][]float32, n)
			for i := range vecs {
				vecs[i] = make([]float32, 2880)
			}
			step := int64(0)
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make([]error, n)
				for i, r := range rings {
					wg.Go(func() { errs[i] = r.AllReduce(context.Background(), step, vecs[i]) })
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				step++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*(n-1))/1e3, "µs/hop")
		})
	}
}
