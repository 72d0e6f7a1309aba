// A fake libnvrtc.so for tests, to go with fakecuda.c's FAKE_CUDA_OK mode:
// it compiles nothing, but checks its calls (a program created and not
// destroyed; options given as an array of strings; a --gpu-architecture
// among those it says it supports; the CUBIN asked for only after a
// successful compile for a real sm_ target; buffers given), and returns a
// log and, as the "CUBIN", the ELF magic followed by the kernels it found
// in the source (extern "C" __global__ void name(...)) with their
// signatures, which the fake driver reads to check launches. Records and
// failures: fakecuda.c.
#define FAKE_RECORD_ONLY
#include "fakecuda.c"

#include <ctype.h>

enum {
	NVRTC_SUCCESS = 0,
	NVRTC_ERROR_OUT_OF_MEMORY = 1,
	NVRTC_ERROR_PROGRAM_CREATION_FAILURE = 2,
	NVRTC_ERROR_INVALID_INPUT = 3,
	NVRTC_ERROR_INVALID_PROGRAM = 4,
	NVRTC_ERROR_INVALID_OPTION = 5,
	NVRTC_ERROR_COMPILATION = 6,
	NVRTC_ERROR_INTERNAL_ERROR = 11,
};

static const int archs[] = {75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121};
#define NARCHS ((int)(sizeof archs / sizeof archs[0]))

#define MAX_PROGS 256
#define PROG_BASE ((uintptr_t)0x9a000000)
static struct {
	int live, compiled;
	char *src, *klist, *image, *ptx, *log;
	size_t image_size;
	char arch[32];
	int nkernels;
} progs[MAX_PROGS];
static int nprogs;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#define BEGIN(fn)                        \
	static const char *const F = fn; \
	fake_line l;                     \
	fake_begin(&l, F);               \
	pthread_mutex_lock(&mu);         \
	int rc = NVRTC_SUCCESS
#define FAKE_INJECTED_RC NVRTC_ERROR_INTERNAL_ERROR

static int prog_index(uintptr_t p) {
	if (p < PROG_BASE || p >= PROG_BASE + MAX_PROGS)
		return -1;
	int i = (int)(p - PROG_BASE);
	return i < nprogs && progs[i].live ? i : -1;
}

static const char *errstr(int r) {
	switch (r) {
	case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
	case NVRTC_ERROR_OUT_OF_MEMORY: return "NVRTC_ERROR_OUT_OF_MEMORY";
	case NVRTC_ERROR_PROGRAM_CREATION_FAILURE: return "NVRTC_ERROR_PROGRAM_CREATION_FAILURE";
	case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
	case NVRTC_ERROR_INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
	case NVRTC_ERROR_INVALID_OPTION: return "NVRTC_ERROR_INVALID_OPTION";
	case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
	case NVRTC_ERROR_INTERNAL_ERROR: return "NVRTC_ERROR_INTERNAL_ERROR";
	}
	return "NVRTC_ERROR unknown";
}

// Not recorded: the library calls it to describe its own errors.
const char *nvrtcGetErrorString(int r) { return errstr(r); }

int nvrtcVersion(int *major, int *minor) {
	BEGIN("nvrtcVersion");
	CHECK(major && minor, NVRTC_ERROR_INVALID_INPUT, "NULL major or minor");
	FAIL_IF_INJECTED();
	*major = 13;
	*minor = 0;
	ARGS(" -> %d.%d", *major, *minor);
	DONE;
}

int nvrtcGetNumSupportedArchs(int *n) {
	BEGIN("nvrtcGetNumSupportedArchs");
	CHECK(n, NVRTC_ERROR_INVALID_INPUT, "NULL count");
	FAIL_IF_INJECTED();
	*n = NARCHS;
	ARGS(" -> n=%d", *n);
	DONE;
}

int nvrtcGetSupportedArchs(int *a) {
	BEGIN("nvrtcGetSupportedArchs");
	CHECK(a, NVRTC_ERROR_INVALID_INPUT, "NULL array");
	FAIL_IF_INJECTED();
	memcpy(a, archs, sizeof archs);
	ARGS(" -> archs=");
	for (int i = 0; i < NARCHS; i++)
		ARGS("%s%d", i ? "," : "", archs[i]);
	DONE;
}

// kernels appends "name signature\n" for each extern "C" __global__ void
// kernel of src to out (signature: F float*, D double*, i int, f float, ?
// anything else; "-" when it has no parameters) and returns their number.
static int kernels(const char *src, char **out) {
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	b[0] = 0;
	int nk = 0;
	const char *pat = "extern \"C\" __global__ void";
	for (const char *p = strstr(src, pat); p; p = strstr(p, pat)) {
		p += strlen(pat);
		while (isspace((unsigned char)*p))
			p++;
		const char *name = p;
		while (isalnum((unsigned char)*p) || *p == '_')
			p++;
		size_t nl = (size_t)(p - name);
		while (isspace((unsigned char)*p))
			p++;
		if (nl == 0 || *p != '(')
			continue;
		const char *close = strchr(p, ')');
		if (!close)
			break;
		char sig[32];
		int ns = 0;
		for (const char *q = p + 1; q < close && ns < 31;) {
			const char *e = memchr(q, ',', (size_t)(close - q));
			if (!e)
				e = close;
			int star = memchr(q, '*', (size_t)(e - q)) != NULL;
			char word[256];
			size_t wl = (size_t)(e - q) < sizeof word - 1 ? (size_t)(e - q) : sizeof word - 1;
			memcpy(word, q, wl);
			word[wl] = 0;
			int blank = 1;
			for (size_t i = 0; i < wl; i++)
				if (!isspace((unsigned char)word[i]))
					blank = 0;
			if (!blank)
				sig[ns++] = star ? (strstr(word, "double") ? 'D' : strstr(word, "float") ? 'F' : '?')
				                 : strstr(word, "float") ? 'f' : strstr(word, "int") ? 'i' : '?';
			q = e + 1;
		}
		sig[ns] = 0;
		while (n + nl + ns + 8 > cap)
			b = realloc(b, cap *= 2);
		n += (size_t)sprintf(b + n, "%.*s %s\n", (int)nl, name, ns ? sig : "-");
		nk++;
		p = close;
	}
	*out = b;
	return nk;
}

int nvrtcCreateProgram(uintptr_t *prog, const char *src, const char *name, int nh, const char *const *headers,
                       const char *const *names) {
	BEGIN("nvrtcCreateProgram");
	ARGS(" name=%s src_bytes=%zu headers=%d", name ? name : "(null)", src ? strlen(src) : 0, nh);
	CHECK(prog, NVRTC_ERROR_INVALID_PROGRAM, "NULL prog");
	CHECK(src && *src, NVRTC_ERROR_INVALID_INPUT, "NULL or empty source");
	CHECK(nh >= 0 && (nh == 0 || (headers && names)), NVRTC_ERROR_INVALID_INPUT, "%d headers, arrays %p %p", nh,
	      (const void *)headers, (const void *)names);
	CHECK(nprogs < MAX_PROGS, NVRTC_ERROR_OUT_OF_MEMORY, "more than %d programs", MAX_PROGS);
	FAIL_IF_INJECTED();
	int i = nprogs++;
	progs[i].live = 1;
	progs[i].compiled = 0;
	progs[i].src = strdup(src);
	progs[i].image = progs[i].ptx = progs[i].log = NULL;
	progs[i].nkernels = kernels(src, &progs[i].klist);
	*prog = PROG_BASE + i;
	ARGS(" -> prog=0x%lx kernels=%d", (unsigned long)*prog, progs[i].nkernels);
	DONE;
}

int nvrtcCompileProgram(uintptr_t prog, int nopt, const char *const *opts) {
	BEGIN("nvrtcCompileProgram");
	ARGS(" prog=0x%lx options=%d", (unsigned long)prog, nopt);
	int i = prog_index(prog);
	CHECK(i >= 0, NVRTC_ERROR_INVALID_PROGRAM, "program 0x%lx was not created or was destroyed", (unsigned long)prog);
	CHECK(nopt >= 0 && (nopt == 0 || opts), NVRTC_ERROR_INVALID_INPUT, "%d options, array %p", nopt, (const void *)opts);
	snprintf(progs[i].arch, sizeof progs[i].arch, "compute_52"); // NVRTC's default
	for (int k = 0; k < nopt; k++) {
		CHECK(opts[k], NVRTC_ERROR_INVALID_OPTION, "option %d is NULL", k);
		ARGS(" opt%d=%s", k, opts[k]);
		const char *a = NULL;
		if (strncmp(opts[k], "--gpu-architecture=", 19) == 0)
			a = opts[k] + 19;
		else if (strncmp(opts[k], "-arch=", 6) == 0)
			a = opts[k] + 6;
		if (a) {
			int n = 0;
			CHECK((sscanf(a, "sm_%d", &n) == 1 || sscanf(a, "compute_%d", &n) == 1), NVRTC_ERROR_INVALID_OPTION,
			      "architecture %s", a);
			int ok = 0;
			for (int j = 0; j < NARCHS; j++)
				ok |= archs[j] == n;
			CHECK(ok, NVRTC_ERROR_INVALID_OPTION, "architecture %s is not among those nvrtcGetSupportedArchs gives", a);
			snprintf(progs[i].arch, sizeof progs[i].arch, "%s", a);
		}
		CHECK(opts[k][0] == '-', NVRTC_ERROR_INVALID_OPTION, "option %d %s does not start with -", k, opts[k]);
	}
	FAIL_IF_INJECTED();
	progs[i].compiled = 1;
	// the "CUBIN": ELF magic, a header line, the kernels
	free(progs[i].image);
	free(progs[i].ptx);
	free(progs[i].log);
	const char *kl = progs[i].klist;
	size_t kn = strlen(kl);
	char *img = malloc(kn + 128);
	int h = sprintf(img, "\x7f" "ELF" "FAKECUBIN arch=%s kernels=%d\n", progs[i].arch, progs[i].nkernels);
	memcpy(img + h, kl, kn + 1);
	progs[i].image = img;
	progs[i].image_size = (size_t)h + kn + 1;
	progs[i].ptx = malloc(kn + 128);
	sprintf(progs[i].ptx, "// fake PTX\n.version 9.0\n.target %s\n.address_size 64\n", progs[i].arch);
	progs[i].log = malloc(128);
	snprintf(progs[i].log, 128, "fake NVRTC: %d kernels for %s; nothing was compiled\n", progs[i].nkernels, progs[i].arch);
	ARGS(" -> arch=%s", progs[i].arch);
	DONE;
}

// get_size and get_copy serve the CUBIN, PTX and log.
#define GETTERS(fnSize, fnGet, what, cond, sizeExpr, ptrExpr)                                                       \
	int fnSize(uintptr_t prog, size_t *size) {                                                                  \
		BEGIN(#fnSize);                                                                                     \
		ARGS(" prog=0x%lx", (unsigned long)prog);                                                          \
		int i = prog_index(prog);                                                                           \
		CHECK(i >= 0, NVRTC_ERROR_INVALID_PROGRAM, "program 0x%lx was not created or was destroyed",       \
		      (unsigned long)prog);                                                                         \
		CHECK(size, NVRTC_ERROR_INVALID_INPUT, "NULL size");                                               \
		CHECK(cond, NVRTC_ERROR_INVALID_INPUT, "the %s of a program that was not compiled (for an sm_ target)", \
		      what);                                                                                        \
		FAIL_IF_INJECTED();                                                                                 \
		*size = sizeExpr;                                                                                   \
		ARGS(" -> size=%zu", *size);                                                                        \
		DONE;                                                                                               \
	}                                                                                                           \
	int fnGet(uintptr_t prog, char *buf) {                                                                      \
		BEGIN(#fnGet);                                                                                      \
		ARGS(" prog=0x%lx", (unsigned long)prog);                                                          \
		int i = prog_index(prog);                                                                           \
		CHECK(i >= 0, NVRTC_ERROR_INVALID_PROGRAM, "program 0x%lx was not created or was destroyed",       \
		      (unsigned long)prog);                                                                         \
		CHECK(buf, NVRTC_ERROR_INVALID_INPUT, "NULL buffer");                                              \
		CHECK(cond, NVRTC_ERROR_INVALID_INPUT, "the %s of a program that was not compiled (for an sm_ target)", \
		      what);                                                                                        \
		FAIL_IF_INJECTED();                                                                                 \
		memcpy(buf, ptrExpr, sizeExpr);                                                                     \
		DONE;                                                                                               \
	}

#define EMPTY ""
GETTERS(nvrtcGetCUBINSize, nvrtcGetCUBIN, "CUBIN", progs[i].compiled && strncmp(progs[i].arch, "sm_", 3) == 0,
        progs[i].image_size, progs[i].image)
GETTERS(nvrtcGetPTXSize, nvrtcGetPTX, "PTX", progs[i].compiled, strlen(progs[i].ptx) + 1, progs[i].ptx)
GETTERS(nvrtcGetProgramLogSize, nvrtcGetProgramLog, "log", 1, progs[i].log ? strlen(progs[i].log) + 1 : 1,
        progs[i].log ? progs[i].log : EMPTY)

int nvrtcDestroyProgram(uintptr_t *prog) {
	BEGIN("nvrtcDestroyProgram");
	CHECK(prog, NVRTC_ERROR_INVALID_PROGRAM, "NULL prog");
	ARGS(" prog=0x%lx", (unsigned long)*prog);
	int i = prog_index(*prog);
	CHECK(i >= 0, NVRTC_ERROR_INVALID_PROGRAM, "program 0x%lx was not created or was already destroyed", (unsigned long)*prog);
	FAIL_IF_INJECTED();
	progs[i].live = 0;
	free(progs[i].src);
	free(progs[i].klist);
	free(progs[i].image);
	free(progs[i].ptx);
	free(progs[i].log);
	progs[i].src = progs[i].klist = progs[i].image = progs[i].ptx = progs[i].log = NULL;
	*prog = 0;
	DONE;
}
