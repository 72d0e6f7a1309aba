// Package trainpos holds Position, how far a training run has come: the
// control core advances it and a checkpoint records it (trainstate's
// state.json), and neither of those packages needs the other for it. It
// imports nothing.
package trainpos

// Position is how far training has come: what a checkpoint records of the
// loop besides the weights. Its JSON field names are state.json's, which
// every checkpoint holds: they must not change.
type Position struct {
	Epoch       int   `json:"epoch"`         // current epoch, 0-based
	StepInEpoch int   `json:"step_in_epoch"` // steps committed in the current epoch
	Step        int64 `json:"step"`          // steps committed in all
	// the current epoch's loss so far, so that its mean survives a resume
	EpochLossSum float64 `json:"epoch_loss_sum"`
	EpochCount   int     `json:"epoch_count"`
}
