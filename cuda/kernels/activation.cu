// SiLU, as nn/activation.go computes it. n counts the view's elements
// (images × chw); each tensor has its own image stride.

extern "C" __global__ void silu_forward(const float* x, float* y, int n, int chw, int xs, int ys) {
	TINCT_GRID_STRIDE(i, n) {
		float v = x[tinct_at(i, chw, xs)];
		y[tinct_at(i, chw, ys)] = v * tinct_sigmoid(v);
	}
}

// silu_forward_save sets y = x·σ(x) and overwrites x with σ(x).
extern "C" __global__ void silu_forward_save(float* x, float* y, int n, int chw, int xs, int ys) {
	TINCT_GRID_STRIDE(i, n) {
		long long a = tinct_at(i, chw, xs);
		float v = x[a];
		float s = tinct_sigmoid(v);
		x[a] = s;
		y[tinct_at(i, chw, ys)] = v * s;
	}
}

// silu_backward_saved sets dx = dy·(σ + y·(1−σ)) from the σ and y that
// silu_forward_save left; dx may alias dy.
extern "C" __global__ void silu_backward_saved(const float* sig, const float* y, const float* dy, float* dx, int n, int chw, int ss, int ys, int dys, int dxs) {
	TINCT_GRID_STRIDE(i, n) {
		float s = sig[tinct_at(i, chw, ss)];
		dx[tinct_at(i, chw, dxs)] = dy[tinct_at(i, chw, dys)] * (s + y[tinct_at(i, chw, ys)] * (1.0f - s));
	}
}
