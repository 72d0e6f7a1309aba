package serve

import (
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// DefaultMemoryBudget is Options.MemoryBudget's default: room for the
// largest photo the other limits let in (a 50-megapixel 8-bit RGB PNG
// decodes to 200 MB, and its gray copy takes 50 MB more) with the process
// staying under 400 MiB (docs/serve.md, Memory).
const DefaultMemoryBudget = 256 << 20

// bigRelease is how many bytes given back to the budget make it return
// memory to the operating system (debug.FreeOSMemory) before anyone else
// is granted them: a decoded photo's worth.
const bigRelease = 16 << 20

// errOverBudget: a reservation larger than the whole budget; it can never
// be granted.
var errOverBudget = errors.New("more than the memory budget")

// errBudgetBusy: a reservation that was not granted within its wait.
var errBudgetBusy = errors.New("the memory budget stays taken")

// memBudget is one byte budget for what requests make of their photos:
// every decoded, rotated, gray and fitted copy is reserved before it is
// allocated (at its peak, known from the image's header: planDecode), and
// given back as it is dropped. Kept results (their luminance) count
// against the same budget and are evicted, oldest first, when a request
// needs their room. Requests that do not fit wait in order, first come
// first served, for a bounded time.
//
// Bytes given back are counted as free only after the garbage collector
// has run and the memory was returned to the operating system
// (debug.FreeOSMemory, for every bigRelease bytes given back), so that a
// burst neither doubles the heap (a new photo decoded while the last
// one's pixels still wait for a collection) nor leaves the process at its
// peak size afterwards.
//
// A nil *memBudget accounts nothing and grants everything.
type memBudget struct {
	max int64

	mu        sync.Mutex
	used      int64        // granted reservations
	line      []*memWaiter // waiting, first first
	sinceFree int64        // bytes given back since the last return to the OS
	kept      func() int64 // bytes of kept results, counted against the budget (nil: none)
	evict     func() int64 // drops the oldest kept result and returns its bytes (0: none left)

	freeMu   sync.Mutex // one return to the OS at a time
	freeRuns int64      // returns started (under freeMu)
	freeOS   func()     // debug.FreeOSMemory (tests count the calls)
}

type memWaiter struct {
	n       int64
	ready   chan struct{} // closed when granted
	granted bool          // under mu
	evicted int64         // kept bytes evicted to make its room
}

func newMemBudget(max int64) *memBudget {
	return &memBudget{max: max, freeOS: debug.FreeOSMemory}
}

// memGrant is a granted reservation. Its methods may be called on nil.
type memGrant struct {
	b *memBudget
	n int64
}

// reserve takes n bytes of the budget, waiting up to wait (in line behind
// the reservations that asked before) while they do not fit. It returns
// errOverBudget at once when n exceeds the whole budget, errBudgetBusy
// when the wait ends first, or ctx's error.
func (b *memBudget) reserve(ctx context.Context, n int64, wait time.Duration) (*memGrant, error) {
	if b == nil {
		return nil, nil
	}
	if n > b.max {
		return nil, errOverBudget
	}
	b.mu.Lock()
	if len(b.line) == 0 && b.used+n <= b.max {
		b.used += n
		evicted := b.makeRoom()
		b.mu.Unlock()
		if evicted > 0 {
			b.returnMemory(evicted)
		}
		return &memGrant{b: b, n: n}, nil
	}
	w := &memWaiter{n: n, ready: make(chan struct{})}
	b.line = append(b.line, w)
	b.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
	case <-timer.C:
		err = errBudgetBusy
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.mu.Lock()
	if !w.granted {
		b.line = slices.DeleteFunc(b.line, func(o *memWaiter) bool { return o == w })
		b.grant() // the one behind may fit now
		b.mu.Unlock()
		return nil, err
	}
	b.mu.Unlock()
	if err != nil && ctx.Err() != nil { // granted as the client went away
		g := &memGrant{b: b, n: n}
		g.release()
		return nil, ctx.Err()
	}
	if w.evicted > 0 {
		b.returnMemory(w.evicted)
	}
	return &memGrant{b: b, n: n}, nil
}

// grant grants the waiters at the head of the line while they fit. Call
// with mu held.
func (b *memBudget) grant() {
	for len(b.line) > 0 && b.used+b.line[0].n <= b.max {
		w := b.line[0]
		b.line = b.line[1:]
		b.used += w.n
		w.granted = true
		w.evicted = b.makeRoom()
		close(w.ready)
	}
}

// makeRoom evicts kept results, oldest first, while they and the granted
// reservations exceed the budget, and returns the bytes evicted. Call with
// mu held.
func (b *memBudget) makeRoom() int64 {
	if b.kept == nil || b.evict == nil {
		return 0
	}
	var evicted int64
	for b.used+b.kept() > b.max {
		n := b.evict()
		if n == 0 {
			break
		}
		evicted += n
	}
	return evicted
}

// inUse returns the granted reservations and the kept results' bytes.
func (b *memBudget) inUse() (reserved, kept int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	reserved = b.used
	if b.kept != nil {
		kept = b.kept()
	}
	return reserved, kept
}

// returnMemory counts n bytes as given back (their last references
// dropped) and, for every bigRelease of them, collects the garbage and
// returns the free memory to the operating system before it returns.
// Concurrent callers share one run when it started after they asked.
func (b *memBudget) returnMemory(n int64) {
	b.mu.Lock()
	b.sinceFree += n
	due := b.sinceFree >= bigRelease
	b.mu.Unlock()
	if !due {
		return
	}
	b.freeMu.Lock()
	defer b.freeMu.Unlock()
	b.mu.Lock()
	due = b.sinceFree >= bigRelease // another run may have covered these bytes
	b.sinceFree = 0
	b.mu.Unlock()
	if due {
		b.freeRuns++
		b.freeOS()
	}
}

// freeNow returns the free memory to the operating system now (the idle
// server's return, idleReturner).
func (b *memBudget) freeNow() {
	b.freeMu.Lock()
	defer b.freeMu.Unlock()
	b.mu.Lock()
	b.sinceFree = 0
	b.mu.Unlock()
	b.freeRuns++
	b.freeOS()
}

// shrink gives back what the grant holds beyond n bytes, whose references
// the caller has dropped: the memory is returned to the operating system
// (returnMemory) before the bytes count as free for others.
func (g *memGrant) shrink(n int64) {
	if g == nil || g.n <= n {
		return
	}
	d := g.n - n
	g.n = n
	g.b.returnMemory(d)
	g.b.mu.Lock()
	g.b.used -= d
	g.b.grant()
	g.b.mu.Unlock()
}

// release gives back the whole grant (shrink to 0).
func (g *memGrant) release() { g.shrink(0) }

// handOver gives back the whole grant without returning memory to the
// operating system: its bytes live on, counted by the budget's kept
// results (a finished colorization's luminance).
func (g *memGrant) handOver() {
	if g == nil || g.n == 0 {
		return
	}
	g.b.mu.Lock()
	g.b.used -= g.n
	g.n = 0
	g.b.grant()
	g.b.mu.Unlock()
}
