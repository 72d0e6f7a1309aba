// Copies, sums and fills of views (the U-Net's concatenations are channel
// ranges of one buffer; the residual add and the skip gradients add views),
// the sinusoidal embedding and the forming of the noisy input.

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

// scale_view multiplies every element of the view by a.
extern "C" __global__ void scale_view(float* x, int n, int chw, int xs, float a) {
	TINCT_GRID_STRIDE(i, n) { x[tinct_at(i, chw, xs)] *= a; }
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

// noise_form builds the network input [signal·x0 + noise·eps | gray] of
// model.NoisyExample for n images of hw pixels: x0 and eps are [n,3,hw],
// gray [n,1,hw], input [n,4,hw], signal and noise one rate per image.
extern "C" __global__ void noise_form(const float* x0, const float* gray, const float* eps, const float* signal, const float* noise,
                                      float* input, int n, int hw) {
	TINCT_GRID_STRIDE(i, (long long)n * 4 * hw) {
		int img = (int)(i / (4 * hw)), ch = (int)((i / hw) % 4), p = (int)(i % hw);
		if (ch < 3) {
			long long a = (long long)img * 3 * hw + (long long)ch * hw + p;
			input[i] = signal[img] * x0[a] + noise[img] * eps[a];
		} else {
			input[i] = gray[(long long)img * hw + p];
		}
	}
}
