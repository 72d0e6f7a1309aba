// A fake libcublas.so for tests, to go with fakecuda.c's FAKE_CUDA_OK mode:
// every call succeeds and computes nothing, after checking what cuBLAS
// would: a handle from cublasCreate_v2 not yet destroyed, created and used
// with a context current (asked of the fake driver next to this library);
// a live stream; a known math mode; for the strided-batched products the
// operations, non-negative sizes, leading dimensions at least the rows
// stored, host alpha and beta, fp32 data types and a known compute type and
// algorithm, and each operand's whole batch (from the base through the last
// element of the last matrix) inside one live device allocation, with the
// outputs of different batch entries not overlapping. Records and failures:
// fakecuda.c.
#define FAKE_RECORD_ONLY
#include "fakecuda.c"

#include <dlfcn.h>
#include <libgen.h>

enum {
	SUCCESS = 0,
	NOT_INITIALIZED = 1,
	INVALID_VALUE = 7,
	EXECUTION_FAILED = 13,
	NOT_SUPPORTED = 15,
};

#define MAX_HANDLES 256
#define HANDLE_BASE ((uintptr_t)0xb1a50000)
static struct {
	int live;
	uintptr_t ctx, stream;
	int math;
} handles[MAX_HANDLES];
static int nhandles;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

// The fake driver's checks, from the libcuda.so.1 in this library's own
// directory (not whichever fake another test loaded first).
static int (*drv_range)(uint64_t, uint64_t, char *, size_t);
static int (*drv_stream)(uintptr_t);
static uintptr_t (*drv_current)(void);
static const char *drv_err;

static void find_driver(void) {
	if (drv_range || drv_err)
		return;
	Dl_info info;
	void *h = NULL;
	if (dladdr((void *)find_driver, &info) && info.dli_fname) {
		char self[4096], path[4200];
		snprintf(self, sizeof self, "%s", info.dli_fname);
		snprintf(path, sizeof path, "%s/libcuda.so.1", dirname(self));
		h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	}
	if (!h)
		h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (h) {
		drv_range = (int (*)(uint64_t, uint64_t, char *, size_t))dlsym(h, "fakecuda_range");
		drv_stream = (int (*)(uintptr_t))dlsym(h, "fakecuda_stream");
		drv_current = (uintptr_t(*)(void))dlsym(h, "fakecuda_current");
	}
	if (!drv_range || !drv_stream || !drv_current) {
		drv_range = NULL;
		drv_err = "no fake libcuda.so.1 (fakecuda.c) is loaded beside this fake cuBLAS";
	}
}

#define BEGIN(fn)                        \
	static const char *const F = fn; \
	fake_line l;                     \
	fake_begin(&l, F);               \
	pthread_mutex_lock(&mu);         \
	find_driver();                   \
	int rc = SUCCESS
#define FAKE_INJECTED_RC EXECUTION_FAILED

static int handle_index(uintptr_t h) {
	if (h < HANDLE_BASE || h >= HANDLE_BASE + MAX_HANDLES)
		return -1;
	int i = (int)(h - HANDLE_BASE);
	return i < nhandles && handles[i].live ? i : -1;
}

#define NEED_DRIVER() CHECK(drv_range, NOT_INITIALIZED, "%s", drv_err)
#define NEED_HANDLE(h)                                                                                             \
	int hi = handle_index(h);                                                                                  \
	CHECK(hi >= 0, NOT_INITIALIZED, "handle 0x%lx was not created or was destroyed", (unsigned long)(h));      \
	NEED_DRIVER();                                                                                             \
	CHECK(drv_current() == handles[hi].ctx, NOT_INITIALIZED,                                                   \
	      "the current context (0x%lx) is not the one the handle was created in (0x%lx)", (unsigned long)drv_current(), \
	      (unsigned long)handles[hi].ctx)

int cublasCreate_v2(uintptr_t *h) {
	BEGIN("cublasCreate_v2");
	CHECK(h, INVALID_VALUE, "NULL handle");
	NEED_DRIVER();
	uintptr_t ctx = drv_current();
	CHECK(ctx, NOT_INITIALIZED, "no CUDA context current on this thread");
	CHECK(nhandles < MAX_HANDLES, NOT_INITIALIZED, "more than %d handles", MAX_HANDLES);
	FAIL_IF_INJECTED();
	handles[nhandles].live = 1;
	handles[nhandles].ctx = ctx;
	handles[nhandles].stream = 0;
	handles[nhandles].math = 0;
	*h = HANDLE_BASE + nhandles++;
	ARGS(" -> handle=0x%lx", (unsigned long)*h);
	DONE;
}

int cublasDestroy_v2(uintptr_t h) {
	BEGIN("cublasDestroy_v2");
	ARGS(" handle=0x%lx", (unsigned long)h);
	NEED_HANDLE(h);
	FAIL_IF_INJECTED();
	handles[hi].live = 0;
	DONE;
}

int cublasSetStream_v2(uintptr_t h, uintptr_t s) {
	BEGIN("cublasSetStream_v2");
	ARGS(" handle=0x%lx stream=0x%lx", (unsigned long)h, (unsigned long)s);
	NEED_HANDLE(h);
	CHECK(drv_stream(s) == 0, INVALID_VALUE, "stream 0x%lx was not created or was destroyed", (unsigned long)s);
	FAIL_IF_INJECTED();
	handles[hi].stream = s;
	DONE;
}

int cublasSetMathMode(uintptr_t h, int mode) {
	BEGIN("cublasSetMathMode");
	ARGS(" handle=0x%lx mode=%d", (unsigned long)h, mode);
	NEED_HANDLE(h);
	CHECK(mode >= 0 && (mode & ~16) <= 3, INVALID_VALUE, "math mode %d", mode);
	FAIL_IF_INJECTED();
	handles[hi].math = mode;
	DONE;
}

int cublasGetVersion_v2(uintptr_t h, int *v) {
	BEGIN("cublasGetVersion_v2");
	ARGS(" handle=0x%lx", (unsigned long)h);
	NEED_HANDLE(h);
	CHECK(v, INVALID_VALUE, "NULL version");
	FAIL_IF_INJECTED();
	*v = 130100;
	ARGS(" -> version=%d", *v);
	DONE;
}

// operand checks one operand of a strided-batched product: rows×cols
// column-major with leading dimension ld, batch of them stride floats
// apart from p. It returns 0, or writes why.
static int operand(const char *name, uint64_t p, long long rows, long long cols, int ld, long long stride, int batch,
                   char *why, size_t n) {
	if (ld < (rows > 1 ? rows : 1)) {
		snprintf(why, n, "ld%s %d is less than its %lld rows", name, ld, rows);
		return 1;
	}
	if (stride < 0) {
		snprintf(why, n, "stride%s %lld is negative", name, stride);
		return 1;
	}
	if (rows == 0 || cols == 0 || batch == 0)
		return 0;
	uint64_t last = (uint64_t)(batch - 1) * (uint64_t)stride + (uint64_t)(cols - 1) * (uint64_t)ld + (uint64_t)(rows - 1);
	char r[256];
	if (drv_range(p, 4 * (last + 1), r, sizeof r)) {
		snprintf(why, n, "%s (%lld×%lld, ld %d, stride %lld, batch %d = %llu bytes from 0x%llx): %s", name, rows, cols,
		         ld, stride, batch, (unsigned long long)(4 * (last + 1)), (unsigned long long)p, r);
		return 1;
	}
	return 0;
}

static const char *op(int t) { return t == 0 ? "N" : t == 1 ? "T" : t == 2 ? "C" : "?"; }

// gemm is the checks both products share. atype etc. are -1 for Sgemm.
static int gemm(fake_line *l, const char *F, uintptr_t h, int ta, int tb, int m, int n, int k, const float *alpha,
                uint64_t a, int atype, int lda, long long sa, uint64_t b, int btype, int ldb, long long sb,
                const float *beta, uint64_t c, int ctype, int ldc, long long sc, int batch, int compute, int algo) {
	int rc = SUCCESS;
	fake_add(l, " handle=0x%lx transa=%s transb=%s m=%d n=%d k=%d alpha=%g A=0x%llx", (unsigned long)h, op(ta), op(tb), m,
	         n, k, alpha ? *alpha : __builtin_nan(""), (unsigned long long)a);
	if (atype >= 0)
		fake_add(l, " Atype=%d", atype);
	fake_add(l, " lda=%d strideA=%lld B=0x%llx", lda, sa, (unsigned long long)b);
	if (btype >= 0)
		fake_add(l, " Btype=%d", btype);
	fake_add(l, " ldb=%d strideB=%lld beta=%g C=0x%llx", ldb, sb, beta ? *beta : __builtin_nan(""), (unsigned long long)c);
	if (ctype >= 0)
		fake_add(l, " Ctype=%d", ctype);
	fake_add(l, " ldc=%d strideC=%lld batch=%d", ldc, sc, batch);
	if (atype >= 0)
		fake_add(l, " computeType=%d algo=%d", compute, algo);
	int hi = handle_index(h);
	CHECK(hi >= 0, NOT_INITIALIZED, "handle 0x%lx was not created or was destroyed", (unsigned long)h);
	NEED_DRIVER();
	CHECK(drv_current() == handles[hi].ctx, NOT_INITIALIZED,
	      "the current context (0x%lx) is not the one the handle was created in (0x%lx)", (unsigned long)drv_current(),
	      (unsigned long)handles[hi].ctx);
	CHECK(drv_stream(handles[hi].stream) == 0, INVALID_VALUE, "the handle's stream 0x%lx was destroyed",
	      (unsigned long)handles[hi].stream);
	CHECK(ta >= 0 && ta <= 2 && tb >= 0 && tb <= 2, INVALID_VALUE, "operations %d, %d", ta, tb);
	CHECK(m >= 0 && n >= 0 && k >= 0 && batch >= 0, INVALID_VALUE, "m %d n %d k %d batch %d", m, n, k, batch);
	CHECK(alpha && beta, INVALID_VALUE, "NULL alpha or beta");
	if (atype >= 0) {
		CHECK(atype == 0 && btype == 0 && ctype == 0, NOT_SUPPORTED, "data types %d, %d, %d (only CUDA_R_32F, 0, here)",
		      atype, btype, ctype);
		CHECK(compute == 68 || compute == 69 || compute == 74 || compute == 75 || compute == 77, NOT_SUPPORTED,
		      "compute type %d with fp32 data (32F 68, 32F_PEDANTIC 69, 32F_FAST_16F 74, 32F_FAST_16BF 75, 32F_FAST_TF32 77)",
		      compute);
		CHECK(algo == -1 || (algo >= 0 && algo <= 23) || (algo >= 99 && algo <= 115), INVALID_VALUE, "algorithm %d", algo);
	}
	char why[512];
	// A is m×k (op N) or k×m stored; B is k×n or n×k; C is m×n
	int ra = ta == 0 ? m : k, ca = ta == 0 ? k : m;
	int rb = tb == 0 ? k : n, cb = tb == 0 ? n : k;
	if (k > 0) {
		CHECK(!operand("A", a, ra, ca, lda, sa, batch, why, sizeof why), INVALID_VALUE, "%s", why);
		CHECK(!operand("B", b, rb, cb, ldb, sb, batch, why, sizeof why), INVALID_VALUE, "%s", why);
	} else {
		CHECK(lda >= (ra > 1 ? ra : 1) && ldb >= (rb > 1 ? rb : 1), INVALID_VALUE, "lda %d or ldb %d below the rows", lda, ldb);
	}
	CHECK(!operand("C", c, m, n, ldc, sc, batch, why, sizeof why), INVALID_VALUE, "%s", why);
	CHECK(batch <= 1 || m == 0 || n == 0 || sc >= (long long)(n - 1) * ldc + m, INVALID_VALUE,
	      "strideC %lld: the %d outputs (%d×%d, ldc %d) overlap", sc, batch, m, n, ldc);
	FAIL_IF_INJECTED();
done:
	return rc;
}

int cublasSgemmStridedBatched(uintptr_t h, int ta, int tb, int m, int n, int k, const float *alpha, uint64_t a, int lda,
                              long long sa, uint64_t b, int ldb, long long sb, const float *beta, uint64_t c, int ldc,
                              long long sc, int batch) {
	static const char *const F = "cublasSgemmStridedBatched";
	fake_line l;
	fake_begin(&l, F);
	pthread_mutex_lock(&mu);
	find_driver();
	int rc = gemm(&l, F, h, ta, tb, m, n, k, alpha, a, -1, lda, sa, b, -1, ldb, sb, beta, c, -1, ldc, sc, batch, 0, 0);
	pthread_mutex_unlock(&mu);
	return fake_end(&l, rc);
}

int cublasGemmStridedBatchedEx(uintptr_t h, int ta, int tb, int m, int n, int k, const void *alpha, uint64_t a,
                               int atype, int lda, long long sa, uint64_t b, int btype, int ldb, long long sb,
                               const void *beta, uint64_t c, int ctype, int ldc, long long sc, int batch, int compute,
                               int algo) {
	static const char *const F = "cublasGemmStridedBatchedEx";
	fake_line l;
	fake_begin(&l, F);
	pthread_mutex_lock(&mu);
	find_driver();
	int rc = gemm(&l, F, h, ta, tb, m, n, k, alpha, a, atype, lda, sa, b, btype, ldb, sb, beta, c, ctype, ldc, sc,
	              batch, compute, algo);
	pthread_mutex_unlock(&mu);
	return fake_end(&l, rc);
}
