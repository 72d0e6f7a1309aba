//go:build !amd64

package nn

func bnApply(x, y []float32, mu, is float32)               { bnApplyGo(x, y, mu, is) }
func sumSqDev(x []float32, mu float32) float32             { return sumSqDevGo(x, mu) }
func dotDev(g, x []float32, mu float32) (float32, float32) { return dotDevGo(g, x, mu) }
func bnBack(g, x, out []float32, is, mdy, mu, k float32, acc bool) {
	bnBackGo(g, x, out, is, mdy, mu, k, acc)
}
