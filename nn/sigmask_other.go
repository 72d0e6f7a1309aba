//go:build !linux

package nn

func blockSignals() uint64      { return 0 }
func restoreSignals(old uint64) {}
