package nn

//go:noescape
func bnApplyAVX2(x, y *float32, n int, mu, is float32)

//go:noescape
func sumSqDevAVX2(x *float32, n int, mu float32) float32

//go:noescape
func dotDevAVX2(dy, x *float32, n int, mu float32) (float32, float32)

//go:noescape
func bnBackAVX2(dy, x, out *float32, n int, is, mdy, mu, k float32, acc bool)

// bnApply sets y = (x − mu)·is.
func bnApply(x, y []float32, mu, is float32) {
	y = y[:len(x)]
	if n := len(x) &^ 7; useAVX2 && n > 0 {
		bnApplyAVX2(&x[0], &y[0], n, mu, is)
		x, y = x[n:], y[n:]
	}
	bnApplyGo(x, y, mu, is)
}

// sumSqDev returns Σ(x−mu)².
func sumSqDev(x []float32, mu float32) float32 {
	var s float32
	if n := len(x) &^ 15; useAVX2 && n > 0 {
		s = sumSqDevAVX2(&x[0], n, mu)
		x = x[n:]
	}
	return s + sumSqDevGo(x, mu)
}

// dotDev returns Σg and Σg·(x−mu).
func dotDev(g, x []float32, mu float32) (float32, float32) {
	x = x[:len(g)]
	var a, b float32
	if n := len(g) &^ 15; useAVX2 && n > 0 {
		a, b = dotDevAVX2(&g[0], &x[0], n, mu)
		g, x = g[n:], x[n:]
	}
	a2, b2 := dotDevGo(g, x, mu)
	return a + a2, b + b2
}

// bnBack sets (or adds to) out the BatchNorm input gradient
// is·(g − mdy − (x−mu)·k).
func bnBack(g, x, out []float32, is, mdy, mu, k float32, acc bool) {
	x, out = x[:len(g)], out[:len(g)]
	if n := len(g) &^ 7; useAVX2 && n > 0 {
		bnBackAVX2(&g[0], &x[0], &out[0], n, is, mdy, mu, k, acc)
		g, x, out = g[n:], x[n:], out[n:]
	}
	bnBackGo(g, x, out, is, mdy, mu, k, acc)
}
