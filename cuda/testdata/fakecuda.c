// A fake libcuda.so.1 for tests.
//
// By default it answers the calls cuda.Probe makes as a driver with one
// "Fake H200" (compute capability 9.0, 132 multiprocessors) would, or, with
// FAKE_CUDA_NODEV set, fails cuInit with CUDA_ERROR_NO_DEVICE. Every other
// symbol the bindings need exists and fails with CUDA_ERROR_NOT_SUPPORTED
// (801) if called.
//
// With FAKE_CUDA_OK=1 every call succeeds, as on a GPU that computes
// nothing, and checks its arguments the way a driver would (and some ways
// it would not say): cuInit first; a context current on the calling thread
// for the calls that need one; handles (contexts, streams, modules,
// functions, events, pinned host buffers) that were created and not yet
// destroyed; device ranges of copies and memsets inside one live allocation;
// a launch's function from cuModuleGetFunction of a loaded module, its grid
// and block within the device's limits, kernelParams given, and each
// pointer parameter (by the kernel's signature, which the fake NVRTC writes
// into its fake CUBIN) a suitably aligned address inside a live allocation.
// cuMemAlloc is a bump allocator (distinct addresses, a gap between
// allocations, never reused) that remembers sizes; each allocation has a
// host shadow (up to FAKE_CUDA_SHADOW_MAX bytes in all, default 256 MiB)
// so that uploads, device copies, memsets and downloads round-trip. Kernels
// and products compute nothing.
//
// fakecublas.c checks its products' operands through fakecuda_range and
// the other fakecuda_* functions below.
//
// The record and the failures a test asks for, in every fake library (the
// others #define FAKE_RECORD_ONLY and #include this file for them; each
// library has its own copy of this state):
//
//   FAKE_CUDA_LOG=path       append one line per call: the function's name,
//                            its arguments as key=value, then "->" and what
//                            it wrote back, then rc=<status>. A call that
//                            breaks one of the fake's checks also writes a
//                            line starting "VIOLATION <function>: " (here and
//                            on stderr) and returns an error status.
//   FAKE_CUDA_LOG_LIMIT=N    record at most N ordinary lines per library per
//                            process (then one line saying so); VIOLATION and
//                            injected-failure lines are always written.
//   FAKE_CUDA_FAIL=f[@n],... make function f fail, from its n-th call on
//                            (default: the first), with the library's
//                            "unknown error" status and a line "FAILED <f>:
//                            injected by FAKE_CUDA_FAIL".
//   FAKE_CUDA_HANG=f         make function f never return (a hung GPU), for
//                            the tests of what runs it with a time limit.
//   FAKE_CUDA_SHADOW_MAX=N   (the driver) host shadows for at most N bytes of
//                            device memory; beyond, downloads give zeros.

// ---- the record ----

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t fake_log_mu = PTHREAD_MUTEX_INITIALIZER;
static int fake_fd = -2; // -2: not opened yet; -1: no record
static long fake_lines, fake_limit = -1;

static inline void fake_write_locked(const char *s, size_t n) {
	if (fake_fd == -2) {
		const char *p = getenv("FAKE_CUDA_LOG");
		fake_fd = p && *p ? open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
		const char *l = getenv("FAKE_CUDA_LOG_LIMIT");
		fake_limit = l && *l ? atol(l) : -1;
	}
	if (fake_fd >= 0) {
		ssize_t r = write(fake_fd, s, n); // one write per line: lines of the
		(void)r;                          // libraries do not interleave
	}
}

// A line being built: name, arguments, outputs.
typedef struct {
	char buf[2048];
	size_t n;
} fake_line;

static inline void fake_addv(fake_line *l, const char *fmt, va_list ap) {
	if (l->n >= sizeof l->buf - 1)
		return;
	int k = vsnprintf(l->buf + l->n, sizeof l->buf - l->n, fmt, ap);
	if (k > 0)
		l->n = l->n + (size_t)k < sizeof l->buf - 1 ? l->n + (size_t)k : sizeof l->buf - 1;
}

__attribute__((format(printf, 2, 3))) static inline void fake_add(fake_line *l, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fake_addv(l, fmt, ap);
	va_end(ap);
}

// fake_begin starts the line of a call.
static inline void fake_begin(fake_line *l, const char *fn) {
	l->n = 0;
	fake_add(l, "%s", fn);
}

// fake_end records the line with its status and returns the status.
static inline int fake_end(fake_line *l, int rc) {
	fake_add(l, " rc=%d\n", rc);
	pthread_mutex_lock(&fake_log_mu);
	if (fake_fd == -2)
		fake_write_locked("", 0);
	if (fake_limit < 0 || fake_lines < fake_limit)
		fake_write_locked(l->buf, l->n);
	else if (fake_lines == fake_limit) {
		static const char msg[] = "LIMIT FAKE_CUDA_LOG_LIMIT reached: further ordinary calls of this library are not recorded\n";
		fake_write_locked(msg, sizeof msg - 1);
	}
	fake_lines++;
	pthread_mutex_unlock(&fake_log_mu);
	return rc;
}

// fake_special writes a line that the limit does not hold back, to the
// record and to stderr.
static inline void fake_special(const char *kind, const char *fn, const char *fmt, va_list ap) {
	fake_line l;
	l.n = 0;
	fake_add(&l, "%s %s: ", kind, fn);
	fake_addv(&l, fmt, ap);
	fake_add(&l, "\n");
	pthread_mutex_lock(&fake_log_mu);
	fake_write_locked(l.buf, l.n);
	pthread_mutex_unlock(&fake_log_mu);
	ssize_t r = write(2, "fake: ", 6);
	r = write(2, l.buf, l.n);
	(void)r;
}

// fake_violation reports a broken check of fn and returns code, the status
// the call then returns.
__attribute__((format(printf, 3, 4))) static inline int fake_violation(const char *fn, int code, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fake_special("VIOLATION", fn, fmt, ap);
	va_end(ap);
	return code;
}

__attribute__((format(printf, 2, 3))) static inline void fake_failed(const char *fn, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fake_special("FAILED", fn, fmt, ap);
	va_end(ap);
}

// fake_injected reports whether FAKE_CUDA_FAIL asks fn to fail on this
// call (each call of fn counts, whether it fails or not); with
// FAKE_CUDA_HANG=fn it never returns.
static inline int fake_injected(const char *fn) {
	static struct {
		char name[64];
		long calls;
	} seen[128];
	static int nseen;
	const char *hang = getenv("FAKE_CUDA_HANG");
	if (hang && strcmp(hang, fn) == 0) {
		fake_failed(fn, "hangs (FAKE_CUDA_HANG)");
		for (;;)
			sleep(1);
	}
	const char *env = getenv("FAKE_CUDA_FAIL");
	if (!env || !*env)
		return 0;
	pthread_mutex_lock(&fake_log_mu);
	long calls = 0;
	int i;
	for (i = 0; i < nseen && strcmp(seen[i].name, fn) != 0; i++)
		;
	if (i == nseen && nseen < 128) {
		snprintf(seen[i].name, sizeof seen[i].name, "%s", fn);
		seen[i].calls = 0;
		nseen++;
	}
	if (i < 128)
		calls = ++seen[i].calls;
	pthread_mutex_unlock(&fake_log_mu);
	size_t fl = strlen(fn);
	for (const char *p = env; *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *at = memchr(p, '@', n);
		size_t nl = at ? (size_t)(at - p) : n;
		long from = at ? atol(at + 1) : 1;
		if (nl == fl && strncmp(p, fn, fl) == 0 && calls >= from) {
			fake_failed(fn, "injected by FAKE_CUDA_FAIL (call %ld)", calls);
			return 1;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

// The call macros every fake shares (each defines its own BEGIN, its
// mutex mu, and FAKE_INJECTED_RC, the code an injected failure returns):
// ARGS adds to the call's record; CHECK(cond, code, ...) reports a
// violation and ends the call when cond is false; DONE ends it.
#define ARGS(...) fake_add(&l, __VA_ARGS__)
#define FAIL_IF_INJECTED()                       \
	do {                                     \
		if (fake_injected(F)) {          \
			rc = FAKE_INJECTED_RC;   \
			goto done;               \
		}                                \
	} while (0)
#define CHECK(cond, code, ...)                                      \
	do {                                                        \
		if (!(cond)) {                                      \
			rc = fake_violation(F, code, __VA_ARGS__); \
			goto done;                                  \
		}                                                   \
	} while (0)
#define DONE                       \
	done:                      \
	pthread_mutex_unlock(&mu); \
	return fake_end(&l, rc)

#ifndef FAKE_RECORD_ONLY

#include <time.h>

typedef int CUresult;
typedef uint64_t CUdeviceptr;
typedef int CUdevice;
typedef uintptr_t CUhandle; // CUcontext, CUstream, CUmodule, CUfunction, CUevent

enum {
	OK = 0,
	INVALID_VALUE = 1,
	OUT_OF_MEMORY = 2,
	NOT_INITIALIZED = 3,
	NO_DEVICE = 100,
	INVALID_DEVICE = 101,
	INVALID_IMAGE = 200,
	INVALID_CONTEXT = 201,
	INVALID_HANDLE = 400,
	NOT_FOUND = 500,
	NOT_READY = 600,
	ILLEGAL_ADDRESS = 700,
	LAUNCH_OUT_OF_RESOURCES = 701,
	NOT_SUPPORTED = 801,
	UNKNOWN = 999,
};

#define NDEV 1
#define TOTAL_MEM ((uint64_t)141 << 30)
#define MAX_THREADS 1024
#define MAX_GRID_X 2147483647u

static int ok_mode(void) {
	const char *s = getenv("FAKE_CUDA_OK");
	return s && *s && strcmp(s, "0") != 0;
}

// ---- state (under mu) ----

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static __thread CUhandle current; // the thread's current context

#define CTX_BASE ((CUhandle)0xc7c70000)
static long ctx_refs[NDEV];

typedef struct {
	CUdeviceptr base;
	uint64_t size;
	unsigned char *shadow; // NULL: beyond FAKE_CUDA_SHADOW_MAX (reads give zeros)
	int live;
} alloc_t;
static alloc_t *allocs; // by base, ascending (the allocator only grows)
static size_t nallocs, capallocs;
static CUdeviceptr next_base = 0x7f1200000000ull;
static uint64_t live_bytes, peak_bytes, shadow_bytes;

typedef struct {
	void *p;
	size_t size;
	int live;
} host_t;
static host_t hosts[4096];
static int nhosts;

#define MAX_STREAMS 4096
#define STREAM_BASE ((CUhandle)0x5e000000)
static char stream_live[MAX_STREAMS];
static int nstreams;

#define MAX_EVENTS 65536
#define EVENT_BASE ((CUhandle)0xe0000000)
static struct {
	char live, recorded;
	double t;
} events[MAX_EVENTS];
static int nevents;

// A module's kernels, from the fake CUBIN: name and signature (one letter a
// parameter: F float*, D double*, i int, f float).
typedef struct {
	char name[64];
	char sig[32];
} kernel_t;
#define MAX_MODULES 256
#define MODULE_BASE ((CUhandle)0x40000000)
static struct {
	int live;
	int nk;
	kernel_t *k;
} modules[MAX_MODULES];
static int nmodules;

#define MAX_FUNCS 65536
#define FUNC_BASE ((CUhandle)0xf0000000)
static struct {
	int module, kernel;
} funcs[MAX_FUNCS];
static int nfuncs;

// ---- helpers ----

static const struct {
	int code;
	const char *name, *msg;
} errs[] = {
	{OK, "CUDA_SUCCESS", "no error"},
	{INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
	{OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
	{NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
	{NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
	{INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
	{INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
	{INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
	{INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
	{NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
	{NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
	{ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
	{LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
	{NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
	{UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

// unsupported is every call but Probe's without FAKE_CUDA_OK.
static CUresult unsupported(const char *fn) {
	fake_line l;
	fake_begin(&l, fn);
	return fake_end(&l, NOT_SUPPORTED);
}

// need_init and need_ctx are the preconditions of most calls.
static CUresult need_init(const char *fn) {
	if (!initialized)
		return fake_violation(fn, NOT_INITIALIZED, "called before cuInit");
	return OK;
}

static int ctx_ok(CUhandle c) {
	return c >= CTX_BASE && c < CTX_BASE + NDEV && ctx_refs[c - CTX_BASE] > 0;
}

static CUresult need_ctx(const char *fn) {
	CUresult r = need_init(fn);
	if (r)
		return r;
	if (current == 0)
		return fake_violation(fn, INVALID_CONTEXT, "no context current on this thread (cuCtxSetCurrent not called here)");
	if (!ctx_ok(current))
		return fake_violation(fn, INVALID_CONTEXT, "the current context 0x%lx was released", (unsigned long)current);
	return OK;
}

static int stream_ok(CUhandle s) {
	if (s == 0 || s == 1 || s == 2) // the legacy and per-thread default streams
		return 1;
	return s >= STREAM_BASE && s < STREAM_BASE + MAX_STREAMS && stream_live[s - STREAM_BASE];
}

static CUresult check_stream(const char *fn, CUhandle s) {
	if (!stream_ok(s))
		return fake_violation(fn, INVALID_HANDLE, "stream 0x%lx was not created or was destroyed", (unsigned long)s);
	return OK;
}

// find returns the allocation holding address p, live or not, or NULL.
static alloc_t *find(CUdeviceptr p) {
	size_t lo = 0, hi = nallocs;
	while (lo < hi) {
		size_t m = (lo + hi) / 2;
		if (allocs[m].base + allocs[m].size <= p)
			lo = m + 1;
		else
			hi = m;
	}
	if (lo < nallocs && allocs[lo].base <= p && p < allocs[lo].base + allocs[lo].size)
		return &allocs[lo];
	return NULL;
}

// range checks that [p, p+bytes) lies in one live allocation; on failure
// it writes why into why and returns NULL.
static alloc_t *range(CUdeviceptr p, uint64_t bytes, char *why, size_t n) {
	alloc_t *a = find(p);
	if (!a) {
		snprintf(why, n, "0x%llx is in no allocation", (unsigned long long)p);
		return NULL;
	}
	if (!a->live) {
		snprintf(why, n, "0x%llx is in the freed allocation 0x%llx (%llu bytes)", (unsigned long long)p,
		         (unsigned long long)a->base, (unsigned long long)a->size);
		return NULL;
	}
	if (bytes > a->base + a->size - p) {
		snprintf(why, n, "[0x%llx, +%llu bytes) runs %llu bytes past the end of the allocation 0x%llx (%llu bytes)",
		         (unsigned long long)p, (unsigned long long)bytes, (unsigned long long)(p + bytes - a->base - a->size),
		         (unsigned long long)a->base, (unsigned long long)a->size);
		return NULL;
	}
	return a;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// ---- for fakecublas.c ----

// fakecuda_range: 0 when [p, p+bytes) lies in one live allocation, else 1
// with the reason in why.
int fakecuda_range(uint64_t p, uint64_t bytes, char *why, size_t n) {
	pthread_mutex_lock(&mu);
	int bad = range(p, bytes, why, n) == NULL;
	pthread_mutex_unlock(&mu);
	return bad;
}

// fakecuda_stream: 0 when s is a live stream (or a default one).
int fakecuda_stream(uintptr_t s) {
	pthread_mutex_lock(&mu);
	int bad = !stream_ok(s);
	pthread_mutex_unlock(&mu);
	return bad;
}

// fakecuda_current: the calling thread's live current context, or 0.
uintptr_t fakecuda_current(void) {
	pthread_mutex_lock(&mu);
	uintptr_t c = initialized && ctx_ok(current) ? current : 0;
	pthread_mutex_unlock(&mu);
	return c;
}

// ---- the driver API: what Probe calls ----

CUresult cuInit(unsigned flags) {
	fake_line l;
	fake_begin(&l, "cuInit");
	fake_add(&l, " flags=%u", flags);
	const char *blocking = getenv("CUDA_LAUNCH_BLOCKING");
	if (blocking)
		fake_add(&l, " CUDA_LAUNCH_BLOCKING=%s", blocking);
	if (fake_injected("cuInit"))
		return fake_end(&l, UNKNOWN);
	if (getenv("FAKE_CUDA_NODEV"))
		return fake_end(&l, NO_DEVICE);
	if (flags != 0)
		return fake_end(&l, fake_violation("cuInit", INVALID_VALUE, "flags %u (must be 0)", flags));
	pthread_mutex_lock(&mu);
	initialized = 1;
	pthread_mutex_unlock(&mu);
	return fake_end(&l, OK);
}

CUresult cuDriverGetVersion(int *v) {
	fake_line l;
	fake_begin(&l, "cuDriverGetVersion");
	if (!v)
		return fake_end(&l, fake_violation("cuDriverGetVersion", INVALID_VALUE, "NULL version"));
	*v = 13000;
	fake_add(&l, " -> version=%d", *v);
	return fake_end(&l, OK);
}

CUresult cuDeviceGetCount(int *n) {
	fake_line l;
	fake_begin(&l, "cuDeviceGetCount");
	CUresult r = need_init("cuDeviceGetCount");
	if (!r && !n)
		r = fake_violation("cuDeviceGetCount", INVALID_VALUE, "NULL count");
	if (r)
		return fake_end(&l, r);
	*n = NDEV;
	fake_add(&l, " -> count=%d", *n);
	return fake_end(&l, OK);
}

CUresult cuDeviceGet(int *d, int ordinal) {
	fake_line l;
	fake_begin(&l, "cuDeviceGet");
	fake_add(&l, " ordinal=%d", ordinal);
	CUresult r = need_init("cuDeviceGet");
	if (!r && !d)
		r = fake_violation("cuDeviceGet", INVALID_VALUE, "NULL device");
	if (!r && (ordinal < 0 || ordinal >= NDEV))
		r = fake_violation("cuDeviceGet", INVALID_DEVICE, "ordinal %d of %d devices", ordinal, NDEV);
	if (r)
		return fake_end(&l, r);
	*d = ordinal;
	fake_add(&l, " -> device=%d", *d);
	return fake_end(&l, OK);
}

static CUresult check_dev(const char *fn, int dev) {
	CUresult r = need_init(fn);
	if (!r && (dev < 0 || dev >= NDEV))
		r = fake_violation(fn, INVALID_DEVICE, "device %d of %d", dev, NDEV);
	return r;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
	fake_line l;
	fake_begin(&l, "cuDeviceGetAttribute");
	fake_add(&l, " attrib=%d dev=%d", attr, dev);
	CUresult r = check_dev("cuDeviceGetAttribute", dev);
	if (!r && !v)
		r = fake_violation("cuDeviceGetAttribute", INVALID_VALUE, "NULL value");
	if (!r && (attr < 1 || attr > 150))
		r = fake_violation("cuDeviceGetAttribute", INVALID_VALUE, "attribute %d", attr);
	if (r)
		return fake_end(&l, r);
	switch (attr) {
	case 75: *v = 9; break;                 /* compute capability major */
	case 76: *v = 0; break;                 /* minor */
	case 16: *v = 132; break;               /* multiprocessors */
	case 1: *v = MAX_THREADS; break;        /* max threads per block */
	case 5: *v = (int)MAX_GRID_X; break;    /* max grid x */
	default: *v = 0;
	}
	fake_add(&l, " -> value=%d", *v);
	return fake_end(&l, OK);
}

CUresult cuDeviceGetName(char *name, int len, int dev) {
	fake_line l;
	fake_begin(&l, "cuDeviceGetName");
	fake_add(&l, " len=%d dev=%d", len, dev);
	CUresult r = check_dev("cuDeviceGetName", dev);
	if (!r && (!name || len <= 0))
		r = fake_violation("cuDeviceGetName", INVALID_VALUE, "buffer %p of %d bytes", (void *)name, len);
	if (r)
		return fake_end(&l, r);
	snprintf(name, len, "Fake H200");
	return fake_end(&l, OK);
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
	fake_line l;
	fake_begin(&l, "cuDeviceTotalMem_v2");
	fake_add(&l, " dev=%d", dev);
	CUresult r = check_dev("cuDeviceTotalMem_v2", dev);
	if (!r && !bytes)
		r = fake_violation("cuDeviceTotalMem_v2", INVALID_VALUE, "NULL bytes");
	if (r)
		return fake_end(&l, r);
	*bytes = TOTAL_MEM;
	fake_add(&l, " -> bytes=%zu", *bytes);
	return fake_end(&l, OK);
}

// Not recorded: the library calls them to describe its own errors.
CUresult cuGetErrorName(CUresult r, const char **s) {
	for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
		if (errs[i].code == r) {
			*s = errs[i].name;
			return OK;
		}
	*s = NULL;
	return INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult r, const char **s) {
	for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
		if (errs[i].code == r) {
			*s = errs[i].msg;
			return OK;
		}
	*s = NULL;
	return INVALID_VALUE;
}

// ---- contexts and streams ----

// BEGIN opens a call's record (ARGS, CHECK, DONE: above).
#define BEGIN(fn)                             \
	static const char *const F = fn;      \
	if (!ok_mode())                       \
		return unsupported(F);        \
	fake_line l;                          \
	fake_begin(&l, F);                    \
	pthread_mutex_lock(&mu);              \
	CUresult rc = OK
#define FAKE_INJECTED_RC UNKNOWN
#define REQUIRE(expr)            \
	do {                     \
		rc = (expr);     \
		if (rc)          \
			goto done; \
	} while (0)

CUresult cuDevicePrimaryCtxRetain(CUhandle *ctx, int dev) {
	BEGIN("cuDevicePrimaryCtxRetain");
	ARGS(" dev=%d", dev);
	REQUIRE(check_dev(F, dev));
	CHECK(ctx, INVALID_VALUE, "NULL context");
	FAIL_IF_INJECTED();
	ctx_refs[dev]++;
	*ctx = CTX_BASE + dev;
	ARGS(" -> ctx=0x%lx refs=%ld", (unsigned long)*ctx, ctx_refs[dev]);
	DONE;
}

CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
	BEGIN("cuDevicePrimaryCtxRelease_v2");
	ARGS(" dev=%d", dev);
	REQUIRE(check_dev(F, dev));
	CHECK(ctx_refs[dev] > 0, INVALID_CONTEXT, "device %d's primary context is not retained (released more often than retained)", dev);
	FAIL_IF_INJECTED();
	ctx_refs[dev]--;
	ARGS(" -> refs=%ld", ctx_refs[dev]);
	DONE;
}

CUresult cuCtxSetCurrent(CUhandle ctx) {
	BEGIN("cuCtxSetCurrent");
	ARGS(" ctx=0x%lx", (unsigned long)ctx);
	REQUIRE(need_init(F));
	CHECK(ctx == 0 || ctx_ok(ctx), INVALID_CONTEXT, "context 0x%lx was not retained or was released", (unsigned long)ctx);
	FAIL_IF_INJECTED();
	current = ctx;
	DONE;
}

CUresult cuCtxSynchronize(void) {
	BEGIN("cuCtxSynchronize");
	REQUIRE(need_ctx(F));
	FAIL_IF_INJECTED();
	DONE;
}

CUresult cuStreamCreate(CUhandle *s, unsigned flags) {
	BEGIN("cuStreamCreate");
	ARGS(" flags=%u", flags);
	REQUIRE(need_ctx(F));
	CHECK(s, INVALID_VALUE, "NULL stream");
	CHECK(flags <= 1, INVALID_VALUE, "flags %u (CU_STREAM_DEFAULT 0 or CU_STREAM_NON_BLOCKING 1)", flags);
	CHECK(nstreams < MAX_STREAMS, OUT_OF_MEMORY, "more than %d streams", MAX_STREAMS);
	FAIL_IF_INJECTED();
	stream_live[nstreams] = 1;
	*s = STREAM_BASE + nstreams++;
	ARGS(" -> stream=0x%lx", (unsigned long)*s);
	DONE;
}

CUresult cuStreamSynchronize(CUhandle s) {
	BEGIN("cuStreamSynchronize");
	ARGS(" stream=0x%lx", (unsigned long)s);
	REQUIRE(need_init(F));
	REQUIRE(check_stream(F, s));
	FAIL_IF_INJECTED();
	DONE;
}

CUresult cuStreamDestroy_v2(CUhandle s) {
	BEGIN("cuStreamDestroy_v2");
	ARGS(" stream=0x%lx", (unsigned long)s);
	REQUIRE(need_init(F));
	CHECK(s >= STREAM_BASE && s < STREAM_BASE + MAX_STREAMS && stream_live[s - STREAM_BASE], INVALID_HANDLE,
	      "stream 0x%lx was not created or was already destroyed", (unsigned long)s);
	FAIL_IF_INJECTED();
	stream_live[s - STREAM_BASE] = 0;
	DONE;
}

// ---- memory ----

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
	BEGIN("cuMemAlloc_v2");
	ARGS(" bytesize=%zu", bytes);
	REQUIRE(need_ctx(F));
	CHECK(p, INVALID_VALUE, "NULL dptr");
	CHECK(bytes > 0, INVALID_VALUE, "0 bytes");
	FAIL_IF_INJECTED();
	if (bytes > TOTAL_MEM - live_bytes) {
		ARGS(" live=%llu", (unsigned long long)live_bytes);
		rc = OUT_OF_MEMORY;
		goto done;
	}
	if (nallocs == capallocs) {
		capallocs = capallocs ? 2 * capallocs : 1024;
		allocs = realloc(allocs, capallocs * sizeof *allocs);
	}
	alloc_t *a = &allocs[nallocs++];
	a->base = next_base;
	a->size = bytes;
	a->live = 1;
	a->shadow = NULL;
	const char *cap = getenv("FAKE_CUDA_SHADOW_MAX");
	uint64_t max = cap && *cap ? strtoull(cap, NULL, 10) : (uint64_t)256 << 20;
	if (bytes <= max - (shadow_bytes < max ? shadow_bytes : max) && (a->shadow = calloc(1, bytes)) != NULL)
		shadow_bytes += bytes;
	// 512-byte aligned, 64 KiB of no man's land after each allocation
	next_base += ((bytes + 511) & ~(uint64_t)511) + (64 << 10);
	live_bytes += bytes;
	if (live_bytes > peak_bytes)
		peak_bytes = live_bytes;
	*p = a->base;
	ARGS(" -> dptr=0x%llx live=%llu peak=%llu", (unsigned long long)*p, (unsigned long long)live_bytes,
	     (unsigned long long)peak_bytes);
	DONE;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
	BEGIN("cuMemFree_v2");
	ARGS(" dptr=0x%llx", (unsigned long long)p);
	REQUIRE(need_init(F));
	alloc_t *a = find(p);
	CHECK(a && a->base == p, INVALID_VALUE, "0x%llx is not the start of an allocation", (unsigned long long)p);
	CHECK(a->live, INVALID_VALUE, "0x%llx (%llu bytes) freed twice", (unsigned long long)p, (unsigned long long)a->size);
	FAIL_IF_INJECTED();
	a->live = 0;
	if (a->shadow) {
		free(a->shadow);
		a->shadow = NULL;
		shadow_bytes -= a->size;
	}
	live_bytes -= a->size;
	ARGS(" bytes=%llu -> live=%llu", (unsigned long long)a->size, (unsigned long long)live_bytes);
	DONE;
}

CUresult cuMemHostAlloc(void **pp, size_t bytes, unsigned flags) {
	BEGIN("cuMemHostAlloc");
	ARGS(" bytesize=%zu flags=%u", bytes, flags);
	REQUIRE(need_ctx(F));
	CHECK(pp, INVALID_VALUE, "NULL pp");
	CHECK(bytes > 0, INVALID_VALUE, "0 bytes");
	CHECK((flags & ~7u) == 0, INVALID_VALUE, "flags %u (PORTABLE 1 | DEVICEMAP 2 | WRITECOMBINED 4)", flags);
	CHECK(nhosts < 4096, OUT_OF_MEMORY, "more than 4096 pinned buffers");
	FAIL_IF_INJECTED();
	void *m = NULL;
	if (posix_memalign(&m, 4096, bytes) != 0) {
		rc = OUT_OF_MEMORY;
		goto done;
	}
	memset(m, 0, bytes);
	hosts[nhosts++] = (host_t){m, bytes, 1};
	*pp = m;
	ARGS(" -> p=%p", m);
	DONE;
}

CUresult cuMemFreeHost(void *p) {
	BEGIN("cuMemFreeHost");
	ARGS(" p=%p", p);
	REQUIRE(need_init(F));
	int i;
	for (i = 0; i < nhosts && !(hosts[i].p == p && hosts[i].live); i++)
		;
	CHECK(i < nhosts, INVALID_VALUE, "%p is not a live buffer from cuMemHostAlloc", p);
	FAIL_IF_INJECTED();
	hosts[i].live = 0;
	free(p);
	DONE;
}

// a device range's shadow, or NULL
static unsigned char *shadow(alloc_t *a, CUdeviceptr p) { return a->shadow ? a->shadow + (p - a->base) : NULL; }

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes, CUhandle s) {
	BEGIN("cuMemcpyHtoDAsync_v2");
	ARGS(" dst=0x%llx src=%p bytes=%zu stream=0x%lx", (unsigned long long)dst, src, bytes, (unsigned long)s);
	REQUIRE(need_ctx(F));
	REQUIRE(check_stream(F, s));
	CHECK(src, INVALID_VALUE, "NULL src");
	char why[256];
	alloc_t *a = range(dst, bytes, why, sizeof why);
	CHECK(a, INVALID_VALUE, "dst: %s", why);
	FAIL_IF_INJECTED();
	if (shadow(a, dst))
		memcpy(shadow(a, dst), src, bytes);
	DONE;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes, CUhandle s) {
	BEGIN("cuMemcpyDtoHAsync_v2");
	ARGS(" dst=%p src=0x%llx bytes=%zu stream=0x%lx", dst, (unsigned long long)src, bytes, (unsigned long)s);
	REQUIRE(need_ctx(F));
	REQUIRE(check_stream(F, s));
	CHECK(dst, INVALID_VALUE, "NULL dst");
	char why[256];
	alloc_t *a = range(src, bytes, why, sizeof why);
	CHECK(a, INVALID_VALUE, "src: %s", why);
	FAIL_IF_INJECTED();
	if (shadow(a, src))
		memcpy(dst, shadow(a, src), bytes);
	else
		memset(dst, 0, bytes);
	DONE;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUhandle s) {
	BEGIN("cuMemcpyDtoDAsync_v2");
	ARGS(" dst=0x%llx src=0x%llx bytes=%zu stream=0x%lx", (unsigned long long)dst, (unsigned long long)src, bytes,
	     (unsigned long)s);
	REQUIRE(need_ctx(F));
	REQUIRE(check_stream(F, s));
	char why[256];
	alloc_t *d = range(dst, bytes, why, sizeof why);
	CHECK(d, INVALID_VALUE, "dst: %s", why);
	alloc_t *a = range(src, bytes, why, sizeof why);
	CHECK(a, INVALID_VALUE, "src: %s", why);
	FAIL_IF_INJECTED();
	if (shadow(d, dst)) {
		if (shadow(a, src))
			memmove(shadow(d, dst), shadow(a, src), bytes);
		else
			memset(shadow(d, dst), 0, bytes);
	}
	DONE;
}

CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, CUhandle s) {
	BEGIN("cuMemsetD32Async");
	ARGS(" dst=0x%llx value=%u n=%zu stream=0x%lx", (unsigned long long)dst, v, n, (unsigned long)s);
	REQUIRE(need_ctx(F));
	REQUIRE(check_stream(F, s));
	CHECK(dst % 4 == 0, INVALID_VALUE, "dst 0x%llx is not 4-byte aligned", (unsigned long long)dst);
	CHECK(n <= UINT64_MAX / 4, INVALID_VALUE, "n %zu", n);
	char why[256];
	alloc_t *a = range(dst, 4 * (uint64_t)n, why, sizeof why);
	CHECK(a, INVALID_VALUE, "dst: %s", why);
	FAIL_IF_INJECTED();
	uint32_t *p = (uint32_t *)shadow(a, dst);
	if (p)
		for (size_t i = 0; i < n; i++)
			p[i] = v;
	DONE;
}

// ---- modules and launches ----

// parse_image reads a fake CUBIN ("\x7fELF", then "FAKECUBIN arch=...\n", then
// one "name signature\n" a kernel, NUL-terminated) into kernels.
static int parse_image(const char *img, kernel_t **out, char *why, size_t n) {
	if (memcmp(img, "\x7f" "ELF", 4) != 0) {
		snprintf(why, n, "the image does not start with the ELF magic (not a CUBIN)");
		return -1;
	}
	if (strncmp(img + 4, "FAKECUBIN ", 10) != 0) {
		snprintf(why, n, "an ELF image that fakenvrtc.c did not make");
		return -1;
	}
	const char *p = strchr(img, '\n');
	int cap = 64, nk = 0;
	kernel_t *k = calloc(cap, sizeof *k);
	while (p && p[1]) {
		p++;
		if (nk == cap)
			k = realloc(k, (cap *= 2) * sizeof *k);
		if (sscanf(p, "%63s %31s", k[nk].name, k[nk].sig) < 1) {
			snprintf(why, n, "a malformed kernel line in the image");
			free(k);
			return -1;
		}
		if (strcmp(k[nk].sig, "-") == 0)
			k[nk].sig[0] = 0;
		nk++;
		p = strchr(p, '\n');
	}
	*out = k;
	return nk;
}

CUresult cuModuleLoadData(CUhandle *m, const void *image) {
	BEGIN("cuModuleLoadData");
	ARGS(" image=%p", image);
	REQUIRE(need_ctx(F));
	CHECK(m, INVALID_VALUE, "NULL module");
	CHECK(image, INVALID_VALUE, "NULL image");
	CHECK(nmodules < MAX_MODULES, OUT_OF_MEMORY, "more than %d modules", MAX_MODULES);
	char why[256];
	kernel_t *k = NULL;
	int nk = parse_image(image, &k, why, sizeof why);
	CHECK(nk >= 0, INVALID_IMAGE, "%s", why);
	FAIL_IF_INJECTED();
	modules[nmodules].live = 1;
	modules[nmodules].nk = nk;
	modules[nmodules].k = k;
	*m = MODULE_BASE + nmodules++;
	ARGS(" -> module=0x%lx kernels=%d", (unsigned long)*m, nk);
	DONE;
}

static int module_ok(CUhandle m) {
	return m >= MODULE_BASE && m < MODULE_BASE + MAX_MODULES && (int)(m - MODULE_BASE) < nmodules && modules[m - MODULE_BASE].live;
}

CUresult cuModuleGetFunction(CUhandle *f, CUhandle m, const char *name) {
	BEGIN("cuModuleGetFunction");
	ARGS(" module=0x%lx name=%s", (unsigned long)m, name ? name : "(null)");
	REQUIRE(need_ctx(F));
	CHECK(f, INVALID_VALUE, "NULL function");
	CHECK(name, INVALID_VALUE, "NULL name");
	CHECK(module_ok(m), INVALID_HANDLE, "module 0x%lx was not loaded or was unloaded", (unsigned long)m);
	int mi = (int)(m - MODULE_BASE), ki;
	for (ki = 0; ki < modules[mi].nk && strcmp(modules[mi].k[ki].name, name) != 0; ki++)
		;
	CHECK(ki < modules[mi].nk, NOT_FOUND, "the module has no kernel %s", name);
	CHECK(nfuncs < MAX_FUNCS, OUT_OF_MEMORY, "more than %d functions", MAX_FUNCS);
	FAIL_IF_INJECTED();
	funcs[nfuncs].module = mi;
	funcs[nfuncs].kernel = ki;
	*f = FUNC_BASE + 16 * (CUhandle)nfuncs++;
	ARGS(" -> function=0x%lx", (unsigned long)*f);
	DONE;
}

CUresult cuModuleUnload(CUhandle m) {
	BEGIN("cuModuleUnload");
	ARGS(" module=0x%lx", (unsigned long)m);
	REQUIRE(need_ctx(F));
	CHECK(module_ok(m), INVALID_HANDLE, "module 0x%lx was not loaded or was already unloaded", (unsigned long)m);
	FAIL_IF_INJECTED();
	modules[m - MODULE_BASE].live = 0;
	DONE;
}

CUresult cuLaunchKernel(CUhandle f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, CUhandle s, void **params, void **extra) {
	BEGIN("cuLaunchKernel");
	REQUIRE(need_ctx(F));
	CHECK(f >= FUNC_BASE && (f - FUNC_BASE) % 16 == 0 && (f - FUNC_BASE) / 16 < (CUhandle)nfuncs, INVALID_HANDLE,
	      "function 0x%lx did not come from cuModuleGetFunction", (unsigned long)f);
	int fi = (int)((f - FUNC_BASE) / 16);
	CHECK(modules[funcs[fi].module].live, INVALID_HANDLE, "function 0x%lx's module was unloaded", (unsigned long)f);
	const kernel_t *k = &modules[funcs[fi].module].k[funcs[fi].kernel];
	ARGS(" kernel=%s grid=%u,%u,%u block=%u,%u,%u shared=%u stream=0x%lx", k->name, gx, gy, gz, bx, by, bz, shared,
	     (unsigned long)s);
	REQUIRE(check_stream(F, s));
	CHECK(gx && gy && gz && bx && by && bz, INVALID_VALUE, "%s: a zero dimension in grid (%u,%u,%u) or block (%u,%u,%u)",
	      k->name, gx, gy, gz, bx, by, bz);
	CHECK(gx <= MAX_GRID_X && gy <= 65535 && gz <= 65535, INVALID_VALUE, "%s: grid (%u,%u,%u) beyond (%u,65535,65535)",
	      k->name, gx, gy, gz, MAX_GRID_X);
	CHECK(bx <= 1024 && by <= 1024 && bz <= 64 && (uint64_t)bx * by * bz <= MAX_THREADS, INVALID_VALUE,
	      "%s: block (%u,%u,%u) beyond (1024,1024,64) or %d threads", k->name, bx, by, bz, MAX_THREADS);
	CHECK(shared <= 48 << 10, LAUNCH_OUT_OF_RESOURCES, "%s: %u bytes of dynamic shared memory (48 KiB without opting in)",
	      k->name, shared);
	CHECK(!(params && extra), INVALID_VALUE, "%s: both kernelParams and extra", k->name);
	int np = (int)strlen(k->sig);
	CHECK(np == 0 || params, INVALID_VALUE, "%s takes %d parameters: NULL kernelParams", k->name, np);
	ARGS(" args=");
	for (int i = 0; i < np; i++) {
		CHECK(params[i], INVALID_VALUE, "%s: kernelParams[%d] is NULL", k->name, i);
		const char *sep = i ? "," : "";
		switch (k->sig[i]) {
		case 'F':
		case 'D': {
			uint64_t v;
			memcpy(&v, params[i], 8);
			ARGS("%s0x%llx", sep, (unsigned long long)v);
			unsigned align = k->sig[i] == 'F' ? 4 : 8;
			char why[256];
			CHECK(v % align == 0, ILLEGAL_ADDRESS, "%s parameter %d (%s): 0x%llx is not %u-byte aligned", k->name, i,
			      k->sig[i] == 'F' ? "float*" : "double*", (unsigned long long)v, align);
			CHECK(range(v, align, why, sizeof why), ILLEGAL_ADDRESS, "%s parameter %d (%s): %s", k->name, i,
			      k->sig[i] == 'F' ? "float*" : "double*", why);
			break;
		}
		case 'i': {
			int32_t v;
			memcpy(&v, params[i], 4);
			ARGS("%s%d", sep, v);
			break;
		}
		case 'f': {
			float v;
			memcpy(&v, params[i], 4);
			ARGS("%s%g", sep, v);
			break;
		}
		}
	}
	FAIL_IF_INJECTED();
	DONE;
}

// ---- events ----

static int event_ok(CUhandle e) {
	return e >= EVENT_BASE && e < EVENT_BASE + MAX_EVENTS && (int)(e - EVENT_BASE) < nevents && events[e - EVENT_BASE].live;
}

CUresult cuEventCreate(CUhandle *e, unsigned flags) {
	BEGIN("cuEventCreate");
	ARGS(" flags=%u", flags);
	REQUIRE(need_ctx(F));
	CHECK(e, INVALID_VALUE, "NULL event");
	CHECK((flags & ~7u) == 0, INVALID_VALUE, "flags %u", flags);
	CHECK(nevents < MAX_EVENTS, OUT_OF_MEMORY, "more than %d events", MAX_EVENTS);
	FAIL_IF_INJECTED();
	events[nevents].live = 1;
	events[nevents].recorded = 0;
	*e = EVENT_BASE + nevents++;
	ARGS(" -> event=0x%lx", (unsigned long)*e);
	DONE;
}

CUresult cuEventRecord(CUhandle e, CUhandle s) {
	BEGIN("cuEventRecord");
	ARGS(" event=0x%lx stream=0x%lx", (unsigned long)e, (unsigned long)s);
	REQUIRE(need_ctx(F));
	CHECK(event_ok(e), INVALID_HANDLE, "event 0x%lx was not created or was destroyed", (unsigned long)e);
	REQUIRE(check_stream(F, s));
	FAIL_IF_INJECTED();
	events[e - EVENT_BASE].recorded = 1;
	events[e - EVENT_BASE].t = now();
	DONE;
}

CUresult cuEventSynchronize(CUhandle e) {
	BEGIN("cuEventSynchronize");
	ARGS(" event=0x%lx", (unsigned long)e);
	REQUIRE(need_init(F));
	CHECK(event_ok(e), INVALID_HANDLE, "event 0x%lx was not created or was destroyed", (unsigned long)e);
	FAIL_IF_INJECTED();
	DONE;
}

CUresult cuEventElapsedTime_v2(float *ms, CUhandle start, CUhandle end) {
	BEGIN("cuEventElapsedTime_v2");
	ARGS(" start=0x%lx end=0x%lx", (unsigned long)start, (unsigned long)end);
	REQUIRE(need_init(F));
	CHECK(ms, INVALID_VALUE, "NULL ms");
	CHECK(event_ok(start) && event_ok(end), INVALID_HANDLE, "an event was not created or was destroyed");
	CHECK(events[start - EVENT_BASE].recorded && events[end - EVENT_BASE].recorded, NOT_READY, "an event was never recorded");
	FAIL_IF_INJECTED();
	*ms = (float)(events[end - EVENT_BASE].t - events[start - EVENT_BASE].t);
	ARGS(" -> ms=%g", *ms);
	DONE;
}

CUresult cuEventDestroy_v2(CUhandle e) {
	BEGIN("cuEventDestroy_v2");
	ARGS(" event=0x%lx", (unsigned long)e);
	REQUIRE(need_init(F));
	CHECK(event_ok(e), INVALID_HANDLE, "event 0x%lx was not created or was already destroyed", (unsigned long)e);
	FAIL_IF_INJECTED();
	events[e - EVENT_BASE].live = 0;
	DONE;
}

#endif // FAKE_RECORD_ONLY
