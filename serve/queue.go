package serve

import (
	"context"
	"slices"
	"sync"
)

// queue bounds the colorizations: one runs, up to waiting more are admitted
// and wait their turn in order, and beyond that a request waits for a
// place (places: first come first served, bounded, at most the client's
// share) or is refused. Admission comes before a request's upload is read
// (it bounds the uploads held in memory); the line for the run slot is
// joined after the upload was read and checked.
type queue struct {
	places *places // capacity 1 + waiting

	mu      sync.Mutex
	running bool
	line    []*waiter // waiting for the run slot, first first
}

// waiter is one request in the line. moved is signalled (without blocking)
// whenever the line changes; granted is set, under mu, when it gets the run
// slot.
type waiter struct {
	moved   chan struct{}
	granted bool
}

func newQueue(waiting, perClient int) *queue {
	return &queue{places: newPlaces(1+max(waiting, 0), perClient)}
}

// capacity is how many requests may be admitted at once.
func (q *queue) capacity() int { return q.places.capacity }

// run takes the run slot, waiting in line behind the requests that asked
// before. While it waits it calls ahead with the number of colorizations
// before this one (the running one included), first when it starts to wait
// and then whenever that number changes; it is not called when the slot is
// free at once. It returns ctx's error if ctx is done first. After a nil
// return the caller must call done.
func (q *queue) run(ctx context.Context, ahead func(n int)) error {
	q.mu.Lock()
	if !q.running && len(q.line) == 0 {
		q.running = true
		q.mu.Unlock()
		return nil
	}
	w := &waiter{moved: make(chan struct{}, 1)}
	q.line = append(q.line, w)
	told := -1
	for {
		if w.granted {
			q.mu.Unlock()
			return nil
		}
		n := slices.Index(q.line, w) + 1 // + the running one
		q.mu.Unlock()
		if n != told {
			ahead(n) // outside the lock: it writes to a client
			told = n
		}
		select {
		case <-w.moved:
		case <-ctx.Done():
			q.mu.Lock()
			if w.granted { // granted as ctx ended: pass the slot on
				q.mu.Unlock()
				q.done()
				return ctx.Err()
			}
			q.line = slices.DeleteFunc(q.line, func(o *waiter) bool { return o == w })
			q.notify()
			q.mu.Unlock()
			return ctx.Err()
		}
		q.mu.Lock()
	}
}

// done frees the run slot: the first in line gets it.
func (q *queue) done() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.line) == 0 {
		q.running = false
		return
	}
	next := q.line[0]
	q.line = q.line[1:]
	next.granted = true
	select {
	case next.moved <- struct{}{}:
	default:
	}
	q.notify()
}

// notify tells everyone in line that the line moved. Call with mu held.
func (q *queue) notify() {
	for _, w := range q.line {
		select {
		case w.moved <- struct{}{}:
		default:
		}
	}
}
