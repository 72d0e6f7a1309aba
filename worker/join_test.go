package worker

import (
	"strings"
	"testing"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/model"
)

// TestCheckOtherNetwork: a Setup for a network the worker would not build
// (another tinct version: the same configuration, other widths, depth or
// parameter count) is refused, naming both.
func TestCheckOtherNetwork(t *testing.T) {
	w, net := newWorker(t)
	defer w.Close()
	mc := model.Config{Widths: []int{4, 8}, BlockDepth: 1, EmbedDims: 32}
	j := &joiner{opt: JoinOptions{Name: "w"}, data: synthetic{n: 8, size: 8}, w: w, mc: mc}
	same := mc.Describe(8, net.NumParams())
	if err := j.check(&cluster.Setup{Model: same}); err != nil {
		t.Fatalf("the worker's own network refused: %v", err)
	}
	for _, other := range []string{
		model.Config{Widths: []int{4, 16}, BlockDepth: 1, EmbedDims: 32}.Describe(8, net.NumParams()),
		mc.Describe(8, net.NumParams()+1),
		mc.Describe(16, net.NumParams()),
	} {
		err := j.check(&cluster.Setup{Model: other})
		if err == nil || !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), same) {
			t.Errorf("coordinator's %q, worker's %q: %v; want a refusal naming both", other, same, err)
		}
	}
}
