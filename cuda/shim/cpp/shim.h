// CPU shim for tinct's CUDA kernels: compiled as C++ by g++, it runs a
// kernel's grid as loops. Each block's threads are fibers run in turn up
// to their next __syncthreads, so the reductions' barriers and
// __shared__ arrays (function statics: one block runs at a time) behave as
// on a GPU. No warps: kernels must not rely on warp-synchronous code.
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
#include <ucontext.h>

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

static std::function<void()> shim_body;
static std::vector<char> shim_stacks;
static std::vector<char> shim_done;
static int shim_cur;
static const size_t shim_stack = 64 * 1024;
// TINCT_SHIM_REVERSE set: blocks and threads run in reverse order, so a
// kernel whose result depends on the order (a race on a GPU) shows up.
static const bool shim_reverse = getenv("TINCT_SHIM_REVERSE") != nullptr;
static bool shim_synced; // a thread of the block reached __syncthreads

static void shim_entry();

#if defined(__x86_64__)
// Fibers switch by saving the callee-saved registers on their own stack:
// glibc's swapcontext also sets the signal mask, a system call at each of
// the ~10 barriers of a block sum for each of 256 threads, which made the
// reductions 95% of a training step on the shim. (A return into a new
// fiber is not a return a shadow stack would allow: the shim is built
// without control-flow protection, -fcf-protection=none.)
extern "C" void shim_switch(void** save, void* to);
asm(R"(
	.pushsection .text
	.p2align 4
	.type shim_switch, @function
shim_switch:
	pushq %rbp
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, (%rdi)
	movq %rsi, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	popq %rbp
	ret
	.popsection
)");
static void* shim_sched;
static std::vector<void*> shim_fibers;

static void __syncthreads() {
	shim_synced = true;
	shim_switch(&shim_fibers[shim_cur], shim_sched);
}

static void shim_init(int t) {
	// the new stack as shim_switch leaves one: six registers, then the
	// address it returns to (16-byte aligned, as after a call), then a
	// return address shim_entry never uses
	void** sp = (void**)(&shim_stacks[(size_t)(t + 1) * shim_stack]);
	*--sp = nullptr;
	*--sp = (void*)shim_entry;
	sp -= 6;
	shim_fibers[t] = sp;
	shim_done[t] = 0;
}

static void shim_resume(int t) { shim_switch(&shim_sched, shim_fibers[t]); }

static void shim_entry() {
	shim_body();
	shim_done[shim_cur] = 1;
	shim_switch(&shim_fibers[shim_cur], shim_sched);
}
#else
static ucontext_t shim_sched;
static std::vector<ucontext_t> shim_fibers;

static void __syncthreads() {
	shim_synced = true;
	swapcontext(&shim_fibers[shim_cur], &shim_sched);
}

static void shim_init(int t) {
	getcontext(&shim_fibers[t]);
	shim_fibers[t].uc_stack.ss_sp = &shim_stacks[(size_t)t * shim_stack];
	shim_fibers[t].uc_stack.ss_size = shim_stack;
	shim_fibers[t].uc_link = &shim_sched;
	makecontext(&shim_fibers[t], shim_entry, 0);
	shim_done[t] = 0;
}

static void shim_resume(int t) { swapcontext(&shim_sched, &shim_fibers[t]); }

static void shim_entry() {
	shim_body();
	shim_done[shim_cur] = 1;
}
#endif

static uint3 shim_thread(int t, dim3 b) {
	return {(unsigned)(t % b.x), (unsigned)((t / b.x) % b.y), (unsigned)(t / (b.x * b.y))};
}

// shim_start runs thread t's fiber to its next barrier or its end.
static void shim_start(int t, dim3 b) {
	shim_cur = t;
	threadIdx = shim_thread(t, b);
	shim_resume(t);
}

static void shim_run(dim3 g, dim3 b, std::function<void()> body) {
	shim_body = body;
	gridDim = g;
	blockDim = b;
	int nt = b.x * b.y * b.z;
	shim_fibers.resize(nt);
	shim_stacks.resize((size_t)nt * shim_stack);
	shim_done.resize(nt);
	for (unsigned bz = 0; bz < g.z; bz++)
		for (unsigned by = 0; by < g.y; by++)
			for (unsigned bi = 0; bi < g.x; bi++) {
				unsigned bx = shim_reverse ? g.x - 1 - bi : bi;
				blockIdx = {bx, by, bz};
				// The block's first thread runs in a fiber. If it ends without
				// a barrier the block has none (every thread of a block must
				// reach each barrier), and the others run as plain calls: most
				// kernels have no barrier, and a fiber per thread costs system
				// calls (getcontext, swapcontext).
				int first = shim_reverse ? nt - 1 : 0;
				shim_synced = false;
				shim_init(first);
				shim_start(first, b);
				if (shim_done[first] && !shim_synced) {
					for (int k = 1; k < nt; k++) {
						int t = shim_reverse ? nt - 1 - k : k;
						threadIdx = shim_thread(t, b);
						shim_body();
					}
					continue;
				}
				for (int t = 0; t < nt; t++) {
					if (t == first) continue;
					shim_init(t);
				}
				int skip = first; // ran to its first barrier already
				int left = nt;
				while (left > 0) {
					for (int k = 0; k < nt; k++) {
						int t = shim_reverse ? nt - 1 - k : k;
						if (t == skip) {
							skip = -1;
							continue;
						}
						if (shim_done[t]) continue;
						shim_start(t, b);
						if (shim_done[t]) left--;
					}
				}
			}
}
