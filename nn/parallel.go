package nn

import (
	"runtime"
	"sync"
	"sync/atomic"
)

var workers = runtime.GOMAXPROCS(0)

// SetWorkers sets how many goroutines the kernels split their work across
// (default GOMAXPROCS). Work is split statically, so results are bitwise
// reproducible for a fixed worker count.
func SetWorkers(n int) {
	if n < 1 {
		n = 1
	}
	workers = n
}

// Workers reports the number of goroutines the kernels use.
func Workers() int { return workers }

// parallelFor runs fn(w, lo, hi) over chunks of [0,n) on up to Workers()
// goroutines that take chunks from a shared counter, w being the worker.
// Which worker gets which chunk depends on timing, so fn must compute each
// item independently of the others (disjoint outputs, per-worker scratch
// only as scratch). Taking chunks dynamically matters: a goroutine woken
// for a layer starts tens of microseconds late, and a static split would
// leave the first worker waiting for it on every layer.
func parallelFor(n int, fn func(w, lo, hi int)) {
	nw := min(workers, n)
	if nw <= 1 {
		if n > 0 {
			fn(0, 0, n)
		}
		return
	}
	chunk := max(1, n/(8*nw))
	var next atomic.Int64
	run := func(w int) {
		for {
			lo := int(next.Add(int64(chunk))) - chunk
			if lo >= n {
				return
			}
			fn(w, lo, min(lo+chunk, n))
		}
	}
	var wg sync.WaitGroup
	wg.Add(nw - 1)
	for w := 1; w < nw; w++ {
		go func(w int) {
			defer wg.Done()
			run(w)
		}(w)
	}
	run(0)
	wg.Wait()
}

// parallelStatic splits [0,n) into at most Workers() contiguous ranges and
// runs fn(w, lo, hi) for each. The split depends only on n and Workers(), so
// per-worker partial sums combined in worker order are bitwise
// reproducible.
func parallelStatic(n int, fn func(w, lo, hi int)) {
	nw := min(workers, n)
	if nw <= 1 {
		if n > 0 {
			fn(0, 0, n)
		}
		return
	}
	var wg sync.WaitGroup
	wg.Add(nw - 1)
	for w := 1; w < nw; w++ {
		go func(w int) {
			defer wg.Done()
			fn(w, w*n/nw, (w+1)*n/nw)
		}(w)
	}
	fn(0, 0, n/nw)
	wg.Wait()
}

// ParallelFor runs fn over chunks of [0,n) on the kernel workers; fn must
// treat every item independently (see parallelFor).
func ParallelFor(n int, fn func(lo, hi int)) {
	parallelFor(n, func(_, lo, hi int) { fn(lo, hi) })
}
