//go:build !amd64

package nn

func siluSave(x, y []float32) { siluSaveGo(x, y) }

var useAVX2 = false
