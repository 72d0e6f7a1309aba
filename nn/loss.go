package nn

// MSE returns mean((pred−target)²) and, when grad has data, sets
// grad = ∂loss/∂pred = 2(pred−target)/count.
func MSE(pred, target, grad Tensor) float32 {
	mustSameShape("mse", pred, target)
	count := pred.N * pred.C * pred.HW()
	sums := make([]float64, workers)
	scale := 2 / float32(count)
	parallelFor(pred.N, func(w, lo, hi int) { // per-worker sums: a fixed split
		var s float64
		for n := lo; n < hi; n++ {
			p, t := pred.Image(n), target.Image(n)
			var g []float32
			if grad.Data != nil {
				g = grad.Image(n)
			}
			for i, v := range p {
				d := v - t[i]
				s += float64(d * d)
				if g != nil {
					g[i] = scale * d
				}
			}
		}
		sums[w] = s
	})
	var total float64
	for _, s := range sums {
		total += s
	}
	return float32(total / float64(count))
}
