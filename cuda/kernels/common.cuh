// Shared by every kernel file; tinct prepends it (after a generated line
// defining TINCT_THREADS) when it compiles the kernels with NVRTC or, for
// the tests, as C++ with the CPU shim. Kernels use only what the shim
// provides: blockIdx, threadIdx, blockDim, gridDim, __shared__,
// __syncthreads, and the C math library.
//
// Views: a tensor is an [n, c, h·w] range of a buffer whose images are
// `stride` floats apart (the U-Net concatenates by writing into channel
// ranges), so element i of an n×chw view lives at (i/chw)·stride + i%chw.

#define TINCT_GRID_STRIDE(i, n) \
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ long long tinct_at(long long i, int chw, int stride) {
	return (i / chw) * stride + i % chw;
}

__device__ __forceinline__ int tinct_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int tinct_imax(int a, int b) { return a > b ? a : b; }

__device__ __forceinline__ float tinct_bits_float(int b) {
	union { int i; float f; } u;
	u.i = b;
	return u.f;
}

__device__ __forceinline__ int tinct_float_bits(float f) {
	union { int i; float f; } u;
	u.f = f;
	return u.i;
}

// e^t for t in [−87, 88], the same polynomial as nn's expNormal: round
// t/ln2 to k with the 1.5·2²³ trick, a degree-6 polynomial on the
// remainder, 2^k from its bits. Compiled without FMA contraction
// (--fmad=false), it rounds as the Go code does.
__device__ __forceinline__ float tinct_exp_normal(float t) {
	const float log2e = 1.44269504088896341f, ln2hi = 0.693359375f, ln2lo = -2.12194440e-4f;
	const float magic = 12582912.0f;
	float kf = t * log2e + magic;
	float k = kf - magic;
	int ki = tinct_float_bits(kf) - tinct_float_bits(magic);
	float r = t - k * ln2hi - k * ln2lo;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	float y = p * r * r + r + 1.0f;
	return y * tinct_bits_float((ki + 127) << 23);
}

// σ(x) as nn's sigmoid: the argument of the exponential clamped to [−87, 88].
__device__ __forceinline__ float tinct_sigmoid(float x) {
	float t = -x;
	if (t < -87.0f) t = -87.0f;
	if (t > 88.0f) t = 88.0f;
	return 1.0f / (1.0f + tinct_exp_normal(t));
}

// tinct_block_sum returns the sum of v over the block's threads to every
// thread; blockDim.x must be TINCT_THREADS (a power of two) and every thread
// must call it.
__device__ __forceinline__ double tinct_block_sum(double* red, double v) {
	red[threadIdx.x] = v;
	__syncthreads();
	for (int s = TINCT_THREADS / 2; s > 0; s >>= 1) {
		if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
		__syncthreads();
	}
	double total = red[0];
	__syncthreads();
	return total;
}
