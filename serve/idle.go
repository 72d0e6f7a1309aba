package serve

import (
	"runtime/metrics"
	"sync"
	"time"
)

// idleAfter is how long the server must have had no request in flight
// before it returns memory to the operating system.
const idleAfter = time.Second

// idleReturner returns memory to the operating system when the server
// goes idle after requests that allocated much (bigRelease or more since
// the last return: a photo, full-size renders, a sampler's first run), so
// that an idle server's resident size is what it keeps (its networks and
// samplers, the kept results) and not the high-water mark of its last
// burst: Go's heap keeps freed memory for reuse and gives it back only
// slowly. Reservations of the memory budget return memory as they end
// (memBudget.returnMemory); this catches what is outside the budget.
type idleReturner struct {
	free func() // memBudget.freeNow

	mu       sync.Mutex
	inFlight int
	timer    *time.Timer
	allocs   uint64 // the heap's allocated bytes at the last return
}

func (ir *idleReturner) begin() {
	ir.mu.Lock()
	ir.inFlight++
	ir.mu.Unlock()
}

func (ir *idleReturner) end() {
	ir.mu.Lock()
	defer ir.mu.Unlock()
	if ir.inFlight--; ir.inFlight > 0 || ir.timer != nil {
		return
	}
	ir.timer = time.AfterFunc(idleAfter, ir.fire)
}

func (ir *idleReturner) fire() {
	ir.mu.Lock()
	ir.timer = nil
	if ir.inFlight > 0 {
		ir.mu.Unlock()
		return
	}
	now := heapAllocs()
	due := now-ir.allocs >= bigRelease
	if due {
		ir.allocs = now
	}
	ir.mu.Unlock()
	if due {
		ir.free()
	}
}

// heapAllocs is the bytes allocated on the heap since the process started.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
