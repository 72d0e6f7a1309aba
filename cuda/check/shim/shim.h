// CPU shim for tinct's CUDA kernels: compiled as C++ by g++, it runs a
// kernel's grid as loops. Each block's threads are fibers (ucontext) run
// in turn up to their next __syncthreads, so the reductions' barriers and
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
static ucontext_t shim_sched;
static std::vector<ucontext_t> shim_fibers;
static std::vector<char> shim_stacks;
static std::vector<char> shim_done;
static int shim_cur;
static const size_t shim_stack = 64 * 1024;
// TINCT_SHIM_REVERSE set: blocks and threads run in reverse order, so a
// kernel whose result depends on the order (a race on a GPU) shows up.
static const bool shim_reverse = getenv("TINCT_SHIM_REVERSE") != nullptr;

static void __syncthreads() { swapcontext(&shim_fibers[shim_cur], &shim_sched); }

static void shim_entry() {
	shim_body();
	shim_done[shim_cur] = 1;
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
				for (int t = 0; t < nt; t++) {
					getcontext(&shim_fibers[t]);
					shim_fibers[t].uc_stack.ss_sp = &shim_stacks[(size_t)t * shim_stack];
					shim_fibers[t].uc_stack.ss_size = shim_stack;
					shim_fibers[t].uc_link = &shim_sched;
					makecontext(&shim_fibers[t], shim_entry, 0);
					shim_done[t] = 0;
				}
				int left = nt;
				while (left > 0) {
					for (int k = 0; k < nt; k++) {
						int t = shim_reverse ? nt - 1 - k : k;
						if (shim_done[t]) continue;
						shim_cur = t;
						threadIdx = {(unsigned)(t % b.x), (unsigned)((t / b.x) % b.y), (unsigned)(t / (b.x * b.y))};
						swapcontext(&shim_sched, &shim_fibers[t]);
						if (shim_done[t]) left--;
					}
				}
			}
}
