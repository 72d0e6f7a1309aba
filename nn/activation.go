package nn

import "math"

// SiLUForward sets y = x·σ(x).
func SiLUForward(x, y Tensor) {
	mustSameShape("silu", x, y)
	planes(x, func(n, c int) {
		src, dst := x.Plane(n, c), y.Plane(n, c)
		for i, v := range src {
			dst[i] = v * sigmoid(v)
		}
	})
}

// SiLUBackward sets dx = dy·σ(x)·(1 + x·(1−σ(x))); dx may alias dy.
func SiLUBackward(x, dy, dx Tensor) {
	mustSameShape("silu backward", x, dy)
	mustSameShape("silu backward", x, dx)
	planes(x, func(n, c int) {
		xs, gs, out := x.Plane(n, c), dy.Plane(n, c), dx.Plane(n, c)
		for i, v := range xs {
			s := sigmoid(v)
			out[i] = gs[i] * s * (1 + v*(1-s))
		}
	})
}

// SiLUForwardSave sets y = x·σ(x) and overwrites x with σ(x): with σ and y
// kept, the backward pass needs no exponential (see SiLUBackwardSaved).
func SiLUForwardSave(x, y Tensor) {
	mustSameShape("silu", x, y)
	planes(x, func(n, c int) { siluSave(x.Plane(n, c), y.Plane(n, c)) })
}

// siluInPlace sets x = x·σ(x). It is siluSave with y aliasing x: both of
// its paths store σ before x·σ at each index, so the product is what stays.
func siluInPlace(x Tensor) {
	planes(x, func(n, c int) {
		p := x.Plane(n, c)
		siluSave(p, p)
	})
}

func siluSaveGo(x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		s := sigmoid(v)
		x[i] = s
		y[i] = v * s
	}
}

// SiLUBackwardSaved sets dx = dy·(σ + y·(1−σ)) from the σ and y that
// SiLUForwardSave left; that is the SiLU derivative σ·(1 + x·(1−σ)).
// dx may alias dy.
func SiLUBackwardSaved(sig, y, dy, dx Tensor) {
	mustSameShape("silu backward", sig, dy)
	mustSameShape("silu backward", y, dx)
	planes(sig, func(n, c int) {
		ss, ys, gs, out := sig.Plane(n, c), y.Plane(n, c), dy.Plane(n, c), dx.Plane(n, c)
		ys, gs, out = ys[:len(ss)], gs[:len(ss)], out[:len(ss)]
		for i, s := range ss {
			out[i] = gs[i] * (s + ys[i]*(1-s))
		}
	})
}

// sigmoid is 1/(1+e^−x) with a branch-free exponential: the argument is
// clamped to [−87, 88], where e^t stays a normal float32 and σ is already
// 0 or 1 to float32 precision (σ(−87) ≈ 1.6e−38).
func sigmoid(x float32) float32 {
	t := -x
	if t < -87 {
		t = -87
	}
	if t > 88 {
		t = 88
	}
	return 1 / (1 + expNormal(t))
}

// expNormal is e^t for t in [−87, 88]: round t/ln2 to k with the 1.5·2²³
// trick, a degree-6 polynomial on the remainder, and 2^k from its bits.
func expNormal(t float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375
		ln2lo = -2.12194440e-4
		magic = 12582912 // 1.5·2²³: adding it rounds to an integer
	)
	kf := t*log2e + magic
	k := kf - magic
	ki := int32(math.Float32bits(kf)) - int32(math.Float32bits(magic))
	r := t - k*ln2hi - k*ln2lo
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	return y * math.Float32frombits(uint32(ki+127)<<23)
}
