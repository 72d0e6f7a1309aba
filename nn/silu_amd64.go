package nn

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// siluConsts are the constants of expNormal and sigmoid, each repeated
// eight times for 256-bit loads (see silu_amd64.s for the order).
var siluConsts = func() (c [14][8]float32) {
	vals := [14]float32{-87, 88, 1.44269504088896341, 12582912, 0.693359375, -2.12194440e-4,
		1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1, 1, 0}
	for i, v := range vals {
		for j := range c[i] {
			c[i][j] = v
		}
	}
	return c
}()

//go:noescape
func siluSaveAVX2(x, y *float32, n int)

// siluSave sets y = x·σ(x) and x = σ(x), eight at a time where AVX2 and FMA
// are present.
func siluSave(x, y []float32) {
	y = y[:len(x)]
	n := len(x) &^ 7
	if useAVX2 && n > 0 {
		siluSaveAVX2(&x[0], &y[0], n)
		x, y = x[n:], y[n:]
	}
	siluSaveGo(x, y)
}
