package serve

import "context"

// queue bounds the colorizations: one runs, up to waiting more are admitted
// and wait their turn, and beyond that admit refuses at once.
type queue struct {
	admitted chan struct{} // one token per admitted request: capacity 1 + waiting
	running  chan struct{} // the run slot: capacity 1
}

func newQueue(waiting int) *queue {
	return &queue{admitted: make(chan struct{}, 1+max(waiting, 0)), running: make(chan struct{}, 1)}
}

// admit takes a place in the queue without waiting. It reports false when
// the queue is full; otherwise the caller must call leave when done.
func (q *queue) admit() bool {
	select {
	case q.admitted <- struct{}{}:
		return true
	default:
		return false
	}
}

func (q *queue) leave() { <-q.admitted }

// capacity is how many requests may be admitted at once.
func (q *queue) capacity() int { return cap(q.admitted) }

// tryRun takes the run slot if it is free.
func (q *queue) tryRun() bool {
	select {
	case q.running <- struct{}{}:
		return true
	default:
		return false
	}
}

// run waits for the run slot until ctx is done.
func (q *queue) run(ctx context.Context) error {
	select {
	case q.running <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// done frees the run slot.
func (q *queue) done() { <-q.running }

// waiting is about how many admitted requests there are besides the caller
// (racy by nature: for a message, not for decisions).
func (q *queue) others() int { return max(len(q.admitted)-1, 0) }
