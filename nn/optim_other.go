//go:build !amd64

package nn

func adamAVX(p, gr, m, v *float32, n int, c *[7]float32)     { panic("unreachable") }
func emaAVX(avg, live *float32, n int, d, oneMinusD float32) { panic("unreachable") }
