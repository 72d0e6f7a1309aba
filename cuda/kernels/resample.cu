// 2×2 average pooling and bilinear ×2 upsampling with half-pixel centres
// (PyTorch align_corners=False), as nn/resample.go computes them. h and w
// are the small side's; planes are n·c, each tensor with its image stride.

// avgpool2_forward: y (n,c,h,w) = 2×2 mean of x (n,c,2h,2w).
extern "C" __global__ void avgpool2_forward(const float* x, float* y, int n, int c, int h, int w, int xs, int ys) {
	int hw = h * w;
	TINCT_GRID_STRIDE(i, (long long)n * c * hw) {
		long long img = i / ((long long)c * hw);
		int ch = (int)((i / hw) % c), p = (int)(i % hw), oy = p / w, ox = p % w;
		const float* r0 = x + img * xs + (long long)ch * 4 * hw + (2 * oy) * (2 * w);
		const float* r1 = r0 + 2 * w;
		y[img * ys + (long long)ch * hw + p] = 0.25f * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1]);
	}
}

// avgpool2_backward adds ¼ of each dy (n,c,h,w) to its four inputs of dx (n,c,2h,2w).
extern "C" __global__ void avgpool2_backward(const float* dy, float* dx, int n, int c, int h, int w, int dys, int dxs) {
	int big = 4 * h * w;
	TINCT_GRID_STRIDE(i, (long long)n * c * big) {
		long long img = i / ((long long)c * big);
		int ch = (int)((i / big) % c), p = (int)(i % big), y = p / (2 * w), x = p % (2 * w);
		float v = dy[img * dys + (long long)ch * h * w + (y / 2) * w + x / 2];
		dx[img * dxs + (long long)ch * big + p] += 0.25f * v;
	}
}

// upsample2_forward: y (n,c,2h,2w) = bilinear ×2 of x (n,c,h,w). Output row
// 2k takes ¾ of row k and ¼ of row k−1, row 2k+1 ¾ of k and ¼ of k+1
// (clamped), and the same along columns, rows first.
extern "C" __global__ void upsample2_forward(const float* x, float* y, int n, int c, int h, int w, int xs, int ys) {
	int big = 4 * h * w;
	TINCT_GRID_STRIDE(i, (long long)n * c * big) {
		long long img = i / ((long long)c * big);
		int ch = (int)((i / big) % c), p = (int)(i % big), oy = p / (2 * w), ox = p % (2 * w);
		const float* src = x + img * xs + (long long)ch * h * w;
		int k = oy / 2;
		int k2 = tinct_imax(0, tinct_imin(h - 1, k - 1 + 2 * (oy % 2)));
		const float* ra = src + k * w;
		const float* rb = src + k2 * w;
		int j = ox / 2;
		int jn = (ox % 2) ? tinct_imin(j + 1, w - 1) : tinct_imax(j - 1, 0);
		float v = 0.75f * ra[j] + 0.25f * rb[j];
		float vn = 0.75f * ra[jn] + 0.25f * rb[jn];
		y[img * ys + (long long)ch * big + p] = 0.75f * v + 0.25f * vn;
	}
}

// upsample2_backward adds to dx (n,c,h,w) the gradient of upsample2_forward
// given dy (n,c,2h,2w): each input gathers the weights with which it
// reached the (at most 4×4) outputs around it.
extern "C" __global__ void upsample2_backward(const float* dy, float* dx, int n, int c, int h, int w, int dys, int dxs) {
	int hw = h * w;
	TINCT_GRID_STRIDE(i, (long long)n * c * hw) {
		long long img = i / ((long long)c * hw);
		int ch = (int)((i / hw) % c), p = (int)(i % hw), k = p / w, j = p % w;
		const float* g = dy + img * dys + (long long)ch * 4 * hw;
		float acc = 0.0f;
		for (int oy = tinct_imax(2 * k - 1, 0); oy <= tinct_imin(2 * k + 2, 2 * h - 1); oy++) {
			int ka = oy / 2;
			int kb = tinct_imax(0, tinct_imin(h - 1, ka - 1 + 2 * (oy % 2)));
			float wr = (ka == k ? 0.75f : 0.0f) + (kb == k ? 0.25f : 0.0f);
			if (wr == 0.0f) continue;
			float row = 0.0f;
			for (int ox = tinct_imax(2 * j - 1, 0); ox <= tinct_imin(2 * j + 2, 2 * w - 1); ox++) {
				int jj = ox / 2;
				int jn = (ox % 2) ? tinct_imin(jj + 1, w - 1) : tinct_imax(jj - 1, 0);
				float wc = (jj == j ? 0.75f : 0.0f) + (jn == j ? 0.25f : 0.0f);
				row += wc * g[oy * 2 * w + ox];
			}
			acc += wr * row;
		}
		dx[img * dxs + (long long)ch * hw + p] += acc;
	}
}
