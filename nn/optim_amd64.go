package nn

// c: b1, 1−b1, b2, 1−b2, bc2Sqrt, eps, stepSize
//
//go:noescape
func adamAVX(p, gr, m, v *float32, n int, c *[7]float32)

//go:noescape
func emaAVX(avg, live *float32, n int, d, oneMinusD float32)
