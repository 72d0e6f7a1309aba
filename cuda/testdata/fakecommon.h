// Shared by the fake NVIDIA libraries (fakecuda.c, fakenvrtc.c,
// fakecublas.c, fakecublaslt.c): the record file and the failures a test
// asks for. Each library includes it and so has its own copy of this state.
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
#ifndef FAKECOMMON_H
#define FAKECOMMON_H

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

static void fake_write_locked(const char *s, size_t n) {
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

static void fake_addv(fake_line *l, const char *fmt, va_list ap) {
	if (l->n >= sizeof l->buf - 1)
		return;
	int k = vsnprintf(l->buf + l->n, sizeof l->buf - l->n, fmt, ap);
	if (k > 0)
		l->n = l->n + (size_t)k < sizeof l->buf - 1 ? l->n + (size_t)k : sizeof l->buf - 1;
}

__attribute__((format(printf, 2, 3))) static void fake_add(fake_line *l, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fake_addv(l, fmt, ap);
	va_end(ap);
}

// fake_begin starts the line of a call.
static void fake_begin(fake_line *l, const char *fn) {
	l->n = 0;
	fake_add(l, "%s", fn);
}

// fake_end records the line with its status and returns the status.
static int fake_end(fake_line *l, int rc) {
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
static void fake_special(const char *kind, const char *fn, const char *fmt, va_list ap) {
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
__attribute__((format(printf, 3, 4))) static int fake_violation(const char *fn, int code, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fake_special("VIOLATION", fn, fmt, ap);
	va_end(ap);
	return code;
}

__attribute__((format(printf, 2, 3))) static void fake_failed(const char *fn, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fake_special("FAILED", fn, fmt, ap);
	va_end(ap);
}

// fake_injected reports whether FAKE_CUDA_FAIL asks fn to fail on this
// call (each call of fn counts, whether it fails or not).
static int fake_injected(const char *fn) {
	static struct {
		char name[64];
		long calls;
	} seen[128];
	static int nseen;
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

#endif
