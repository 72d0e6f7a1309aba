package coordinator_test

import (
	"testing"

	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/trainstate"
	"google.golang.org/protobuf/proto"

	"github.com/tinct/tinct/cluster"
)

// BenchmarkSnapshot is the coordinator's own work with the weights for the
// full-width U-Net, once every snapshot_every steps whatever the number of
// workers: decode rank 0's snapshot (weights, EMA, Adam's moments, buffers:
// 31 MB), load it as the committed state and checksum the whole state.
// Between snapshots it only compares checksums (docs/benchmarks.md).
func BenchmarkSnapshot(b *testing.B) {
	cfg, err := config.Parse(nil, []string{"dataset=unused"})
	if err != nil {
		b.Fatal(err)
	}
	st, err := trainstate.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	wire, err := proto.Marshal(trainstate.EncodeReplica(st.Replica()))
	if err != nil {
		b.Fatal(err)
	}
	np, nb := st.Net.NumParams(), st.Net.NumBuffers()
	b.SetBytes(int64(len(wire)))
	b.ResetTimer()
	for b.Loop() {
		var m cluster.ReplicaState
		if err := proto.Unmarshal(wire, &m); err != nil {
			b.Fatal(err)
		}
		rep, err := trainstate.DecodeReplica(&m, np, nb, st.Adam.LR, st.Adam.Beta1, st.Adam.Beta2, st.Adam.Eps, st.Rule)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.LoadReplica(rep); err != nil {
			b.Fatal(err)
		}
		_ = st.Checksum()
	}
}
