package gpunet

import "testing"

// TestSelfCheck runs the GPU session's check on the shim, on 8×8 images
// to save time: every result passes.
func TestSelfCheck(t *testing.T) {
	s := startShim(t)
	for _, r := range selfCheck(ShimBackend(s), 21, 8) { // 8×8: the rest is TestTraining's at 16×16
		if !r.OK() {
			t.Error(r)
		} else {
			t.Log(r)
		}
	}
}
