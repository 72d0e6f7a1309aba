// The element-wise parts of a stride-1 convolution whose products cuBLAS
// computes (cuda/conv.go): im2col for 3×3 kernels with zero padding 1, the
// bias, the bias gradient, and the flipped weights of the input gradient.

// im2col3 lays out the 3×3 neighbourhoods of x (n,cin,h,w; image stride xs)
// as n matrices of (cin·9)×(h·w), row ci·9+ky·3+kx, back to back.
extern "C" __global__ void im2col3(const float* x, float* col, int n, int cin, int h, int w, int xs) {
	int hw = h * w;
	long long per = (long long)cin * 9 * hw;
	TINCT_GRID_STRIDE(i, (long long)n * per) {
		long long img = i / per;
		int r = (int)((i / hw) % (cin * 9)), p = (int)(i % hw);
		int ci = r / 9, ky = (r % 9) / 3, kx = r % 3;
		int yy = p / w + ky - 1, xx = p % w + kx - 1;
		float v = 0.0f;
		if (yy >= 0 && yy < h && xx >= 0 && xx < w) v = x[img * xs + (long long)ci * hw + yy * w + xx];
		col[i] = v;
	}
}

// bias_forward sets y = bias (or y += bias when accumulate is set) per channel.
extern "C" __global__ void bias_forward(float* y, const float* bias, int n, int c, int hw, int ys, int accumulate) {
	int chw = c * hw;
	TINCT_GRID_STRIDE(i, (long long)n * chw) {
		long long a = tinct_at(i, chw, ys);
		float b = bias[(i / hw) % c];
		y[a] = accumulate ? y[a] + b : b;
	}
}

// bias_grad adds to gb[ch] the sum of dy over images and pixels; one block
// of TINCT_THREADS threads per channel (grid = c).
extern "C" __global__ void bias_grad(const float* dy, float* gb, int n, int c, int hw, int dys) {
	__shared__ double red[TINCT_THREADS];
	int ch = blockIdx.x;
	long long m = (long long)n * hw;
	const float* base = dy + (long long)ch * hw;
	double s = 0;
	for (long long i = threadIdx.x; i < m; i += blockDim.x) s += base[(i / hw) * dys + i % hw];
	s = tinct_block_sum(red, s);
	if (threadIdx.x == 0) gb[ch] += (float)s;
}

// rot_weights turns cout×cin×3×3 weights into the cin×cout×3×3 kernel,
// flipped, whose convolution of dy is the input gradient.
extern "C" __global__ void rot_weights(const float* w, float* rot, int cin, int cout) {
	TINCT_GRID_STRIDE(i, (long long)cout * cin * 9) {
		int k = (int)(i % 9), ci = (int)((i / 9) % cin), co = (int)(i / (9 * cin));
		rot[((long long)ci * cout + co) * 9 + 8 - k] = w[i];
	}
}
