// Copies, sums and fills of views (the U-Net's concatenations are channel
// ranges of one buffer; the residual add and the skip gradients add views)
// and the sinusoidal embedding.

// copy_view sets dst = src.
extern "C" __global__ void copy_view(const float* src, float* dst, int n, int chw, int ss, int ds) {
	TINCT_GRID_STRIDE(i, n) { dst[tinct_at(i, chw, ds)] = src[tinct_at(i, chw, ss)]; }
}

// add_view sets dst += src.
extern "C" __global__ void add_view(const float* src, float* dst, int n, int chw, int ss, int ds) {
	TINCT_GRID_STRIDE(i, n) { dst[tinct_at(i, chw, ds)] += src[tinct_at(i, chw, ss)]; }
}

// fill_view sets every element of the view to v.
extern "C" __global__ void fill_view(float* x, int n, int chw, int xs, float v) {
	TINCT_GRID_STRIDE(i, n) { x[tinct_at(i, chw, xs)] = v; }
}

// embed writes, for each image, the planes sin(v·w_k) then cos(v·w_k)
// (k < half) of its noise variance v: out is the first embedding channel of
// a view with image stride `stride`. The angle is a float product, as in
// model.UNet.embed; sine and cosine are taken in double.
extern "C" __global__ void embed(const float* noise_var, const float* speeds, float* out, int n, int half, int hw, int stride) {
	int chw = 2 * half * hw;
	TINCT_GRID_STRIDE(i, (long long)n * chw) {
		int img = (int)(i / chw), ch = (int)((i / hw) % (2 * half)), k = ch % half;
		float a = noise_var[img] * speeds[k];
		out[tinct_at(i, chw, stride)] = ch < half ? (float)sin((double)a) : (float)cos((double)a);
	}
}
