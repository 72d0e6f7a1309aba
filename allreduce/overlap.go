package allreduce

import (
	"context"
	"fmt"
	"sync"
)

// Overlap all-reduces data in buckets while it is still being produced:
// the caller announces with Ready(from) that data[from:] is final (with from
// decreasing to 0, as model.UNet.BackwardNotify reports gradient tails),
// and a goroutine reduces each new tail of at least minBucket elements with
// AllReduce(ctx, step, tail) as soon as it is announced. The buckets depend
// only on the sequence of Ready calls and minBucket, never on timing, so
// ranks that announce the same offsets cut the same buckets.
//
// Wait must be called once; no other call on the Ring may run until it
// returns.
type Overlap struct {
	r         *Ring
	ctx       context.Context
	step      int64
	data      []float32
	minBucket int

	mu    sync.Mutex
	queue []int
	last  int   // smallest offset announced so far
	bad   error // a misuse of Ready
	wake  chan struct{}

	done chan struct{}
	err  error // set before done is closed
}

// Overlap starts reducing data in tails; see [Overlap].
func (r *Ring) Overlap(ctx context.Context, step int64, data []float32, minBucket int) *Overlap {
	o := &Overlap{
		r: r, ctx: ctx, step: step, data: data, minBucket: minBucket,
		last: len(data),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	go o.loop()
	return o
}

// Ready announces that data[from:] is final. Offsets must not increase from
// one call to the next; Ready(0) announces the whole vector. Ready never
// blocks.
func (o *Overlap) Ready(from int) {
	o.mu.Lock()
	switch {
	case o.bad != nil:
	case from < 0 || from > o.last:
		o.bad = fmt.Errorf("allreduce: rank %d step %d: Overlap.Ready(%d) after Ready(%d): offsets must decrease towards 0 within a vector of %d",
			o.r.cfg.Rank, o.step, from, o.last, len(o.data))
	default:
		o.last = from
		o.queue = append(o.queue, from)
	}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Wait announces the whole vector (as Ready(0)), waits until all of it is
// reduced and returns the first error.
func (o *Overlap) Wait() error {
	o.Ready(0)
	<-o.done
	return o.err
}

func (o *Overlap) loop() {
	defer close(o.done)
	hi := len(o.data)
	if hi == 0 || o.r.cfg.Size == 1 {
		return
	}
	for {
		select {
		case <-o.wake:
		case <-o.ctx.Done():
			o.err = fmt.Errorf("allreduce: rank %d step %d: waiting for gradients to reduce: %w", o.r.cfg.Rank, o.step, o.ctx.Err())
			o.r.fail(o.err)
			return
		case <-o.r.dead:
			o.err = o.r.brokenErr()
			return
		}
		o.mu.Lock()
		q, bad := o.queue, o.bad
		o.queue = nil
		o.mu.Unlock()
		if bad != nil {
			o.err = bad
			o.r.fail(bad)
			return
		}
		for _, from := range q {
			if from == hi || (from > 0 && hi-from < o.minBucket) {
				continue // empty, or too small yet: wait for a longer tail
			}
			if err := o.r.AllReduce(o.ctx, o.step, o.data[from:hi]); err != nil {
				o.err = err
				return
			}
			hi = from
			if hi == 0 {
				return
			}
		}
	}
}
