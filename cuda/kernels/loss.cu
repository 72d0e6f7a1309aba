// The MSE loss of nn/loss.go and its gradient, with the share scale of
// model.TrainStep folded in: grad = (scale·d)·mult, d = pred − target
// (scale = 2/count; mult = 1 multiplies nothing). Each block writes the sum
// of its d² (each d² a float, summed in double) to partial[blockIdx.x];
// sum_f64 adds the partials, and the host divides by count.

extern "C" __global__ void mse(const float* pred, const float* target, float* grad, double* partial,
                               int n, int chw, int ps, int ts, int gs, float scale, float mult) {
	__shared__ double red[TINCT_THREADS];
	double s = 0;
	TINCT_GRID_STRIDE(i, n) {
		float d = pred[tinct_at(i, chw, ps)] - target[tinct_at(i, chw, ts)];
		s += (double)(d * d);
		float g = scale * d;
		if (mult != 1.0f) g *= mult;
		grad[tinct_at(i, chw, gs)] = g;
	}
	s = tinct_block_sum(red, s);
	if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// sum_f64 sets out[0] to the sum of x[0..n); one block of TINCT_THREADS.
extern "C" __global__ void sum_f64(const double* x, double* out, int n) {
	__shared__ double red[TINCT_THREADS];
	double s = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
	s = tinct_block_sum(red, s);
	if (threadIdx.x == 0) out[0] = s;
}
