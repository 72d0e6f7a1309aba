// Adam (PyTorch 1.13's single-tensor update, no weight decay) and the EMA
// of the weights, as model/optim.go computes them. The host computes the
// per-step constants in double as model.Adam does: step_size = lr/bc1 and
// bc2_sqrt = sqrt(1 − β₂^t), both rounded to float.

extern "C" __global__ void adam(float* p, const float* g, float* m, float* v, int n,
                                float b1, float b2, float eps, float step_size, float bc2_sqrt) {
	TINCT_GRID_STRIDE(i, n) {
		float gi = g[i];
		float mi = m[i] * b1 + gi * (1.0f - b1);
		float vi = v[i] * b2 + gi * gi * (1.0f - b2);
		m[i] = mi;
		v[i] = vi;
		float denom = (float)sqrt((double)vi) / bc2_sqrt + eps;
		p[i] -= step_size * mi / denom;
	}
}

// ema sets avg = d·avg + (1−d)·live.
extern "C" __global__ void ema(float* avg, const float* live, int n, float d) {
	TINCT_GRID_STRIDE(i, n) { avg[i] = d * avg[i] + (1.0f - d) * live[i]; }
}
