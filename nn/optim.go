package nn

import "math"

// AdamStep is one Adam update (PyTorch 1.13's single-tensor Adam, no weight
// decay) of params from grads with moments m and v, all the same length:
//
//	m = b1·m + (1−b1)·g,  v = b2·v + (1−b2)·g²
//	p −= stepSize·m / (√v/bc2Sqrt + eps)
//
// in float32, in that order of operations, eight at a time where AVX is
// present (bitwise the same: √ of a float32 is correctly rounded either way).
func AdamStep(params, grads, m, v []float32, b1, b2, stepSize, bc2Sqrt, eps float32) {
	n := len(params)
	grads, m, v = grads[:n], m[:n], v[:n]
	if k := n &^ 7; useAVX2 && k > 0 {
		adamAVX(&params[0], &grads[0], &m[0], &v[0], k, &[7]float32{b1, 1 - b1, b2, 1 - b2, bc2Sqrt, eps, stepSize})
		params, grads, m, v = params[k:], grads[k:], m[k:], v[k:]
	}
	adamGo(params, grads, m, v, b1, b2, stepSize, bc2Sqrt, eps)
}

func adamGo(p, g, m, v []float32, b1, b2, stepSize, bc2Sqrt, eps float32) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	for i, gi := range g {
		m[i] = m[i]*b1 + gi*(1-b1)
		v[i] = v[i]*b2 + gi*gi*(1-b2)
		denom := float32(math.Sqrt(float64(v[i])))/bc2Sqrt + eps
		p[i] -= stepSize * m[i] / denom
	}
}

// EMAStep moves avg towards live: avg = d·avg + (1−d)·live.
func EMAStep(avg, live []float32, d float32) {
	live = live[:len(avg)]
	if k := len(avg) &^ 7; useAVX2 && k > 0 {
		emaAVX(&avg[0], &live[0], k, d, 1-d)
		avg, live = avg[k:], live[k:]
	}
	emaGo(avg, live, d)
}

func emaGo(avg, live []float32, d float32) {
	live = live[:len(avg)]
	for i, p := range live {
		avg[i] = d*avg[i] + (1-d)*p
	}
}
