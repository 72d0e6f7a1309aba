package coordinator_test

import (
	"testing"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/trainstate"
)

// BenchmarkCommit is the coordinator's own serial work per step for the
// full-width U-Net, whatever the number of workers: decode rank 0's update
// (7.8 MB), apply it (Adam, BN buffers, EMA) and checksum the result. It
// bounds the step rate of a cluster from above (docs/benchmarks.md).
func BenchmarkCommit(b *testing.B) {
	cfg, err := config.Parse(nil, []string{"dataset=unused"})
	if err != nil {
		b.Fatal(err)
	}
	st, err := trainstate.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	np, nb := len(st.Net.Params), st.Net.NumBuffers()
	wire := cluster.Floats(make([]float32, np+nb))
	update := make([]float32, np+nb)
	for i := range update {
		update[i] = 1e-3
	}
	b.SetBytes(int64(len(wire)))
	b.ResetTimer()
	for b.Loop() {
		if err := cluster.Decode(update, wire); err != nil {
			b.Fatal(err)
		}
		st.Commit(update[:np], update[np:])
		_ = cluster.Checksum(st.Net)
	}
}
