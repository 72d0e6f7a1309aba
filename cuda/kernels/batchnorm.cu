// BatchNorm2d without affine parameters, as nn/batchnorm.go computes it:
// batch statistics in two passes (mean, then squared deviations from the
// float32 mean) accumulated in double, invstd = 1/sqrt(var + eps), running
// statistics with momentum and the unbiased variance.

// bn_stats: one block of TINCT_THREADS threads per channel (grid = c).
extern "C" __global__ void bn_stats(const float* x, float* mean, float* invstd, float* run_mean, float* run_var,
                                    int n, int c, int hw, int xs, float eps, float momentum) {
	__shared__ double red[TINCT_THREADS];
	int ch = blockIdx.x;
	long long m = (long long)n * hw;
	const float* base = x + (long long)ch * hw;
	double s = 0;
	for (long long i = threadIdx.x; i < m; i += blockDim.x) {
		s += base[(i / hw) * xs + i % hw];
	}
	double mu = tinct_block_sum(red, s) / (double)m;
	float muf = (float)mu;
	double ss = 0;
	for (long long i = threadIdx.x; i < m; i += blockDim.x) {
		float d = base[(i / hw) * xs + i % hw] - muf;
		ss += (double)(d * d);
	}
	double v = tinct_block_sum(red, ss) / (double)m;
	if (threadIdx.x == 0) {
		mean[ch] = muf;
		invstd[ch] = (float)(1.0 / sqrt(v + (double)eps));
		double mom = (double)momentum;
		double unbiased = v * (double)m / fmax((double)m - 1.0, 1.0);
		run_mean[ch] = (float)((1.0 - mom) * (double)run_mean[ch] + mom * mu);
		run_var[ch] = (float)((1.0 - mom) * (double)run_var[ch] + mom * unbiased);
	}
}

// bn_eval_stats takes the running statistics as the ones to apply (eval mode).
extern "C" __global__ void bn_eval_stats(const float* run_mean, const float* run_var, float* mean, float* invstd, int c, float eps) {
	TINCT_GRID_STRIDE(i, c) {
		mean[i] = run_mean[i];
		invstd[i] = (float)(1.0 / sqrt((double)run_var[i] + (double)eps));
	}
}

// bn_apply sets y = (x − mean)·invstd per channel.
extern "C" __global__ void bn_apply(const float* x, float* y, const float* mean, const float* invstd, int n, int c, int hw, int xs, int ys) {
	int chw = c * hw;
	TINCT_GRID_STRIDE(i, (long long)n * chw) {
		int ch = (int)((i / hw) % c);
		y[tinct_at(i, chw, ys)] = (x[tinct_at(i, chw, xs)] - mean[ch]) * invstd[ch];
	}
}

// bn_backward writes (accumulate = 0) or adds to dx the input gradient given
// the forward input x and the output gradient dy:
// is·(dy − mean(dy) − (x−mu)·is²·mean(dy·(x−mu))).
// One block of TINCT_THREADS threads per channel (grid = c).
extern "C" __global__ void bn_backward(const float* x, const float* dy, float* dx, const float* mean, const float* invstd,
                                       int n, int c, int hw, int xs, int dys, int dxs, int accumulate) {
	__shared__ double red[TINCT_THREADS];
	int ch = blockIdx.x;
	long long m = (long long)n * hw;
	float mu = mean[ch], is = invstd[ch];
	const float* xb = x + (long long)ch * hw;
	const float* gb = dy + (long long)ch * hw;
	float* ob = dx + (long long)ch * hw;
	double sdy = 0, sdyx = 0;
	for (long long i = threadIdx.x; i < m; i += blockDim.x) {
		long long p = i / hw, q = i % hw;
		float g = gb[p * dys + q];
		sdy += (double)g;
		sdyx += (double)(g * (xb[p * xs + q] - mu));
	}
	sdy = tinct_block_sum(red, sdy);
	sdyx = tinct_block_sum(red, sdyx);
	float mdy = (float)(sdy / (double)m);
	float k = (float)(sdyx / (double)m) * is * is;
	for (long long i = threadIdx.x; i < m; i += blockDim.x) {
		long long p = i / hw, q = i % hw;
		float v = is * (gb[p * dys + q] - mdy - (xb[p * xs + q] - mu) * k);
		ob[p * dxs + q] = accumulate ? ob[p * dxs + q] + v : v;
	}
}
