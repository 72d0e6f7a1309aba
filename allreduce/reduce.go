package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// plan is the schedule of one all-reduce, the same on every rank: the
// vector is cut into n segments (lengths differ by at most one), each
// segment into chunks of at most ce elements (at least one chunk, possibly
// empty, so that every phase sends something and mismatched lengths are
// caught). In phase ph (0 ≤ ph < 2(n−1)) rank r sends segment (r−ph) mod n
// and receives segment (r−ph−1) mod n: phases below n−1 add what they
// receive (reduce-scatter), the rest copy it (all-gather). What a rank
// receives in phase ph it forwards in phase ph+1, chunk by chunk.
type plan struct {
	n, rank, length, ce int
}

func (p plan) phases() int { return 2 * (p.n - 1) }

func (p plan) sendSeg(ph int) int { return mod(p.rank-ph, p.n) }
func (p plan) recvSeg(ph int) int { return mod(p.rank-ph-1, p.n) }

func mod(a, n int) int { return ((a % n) + n) % n }

func (p plan) seg(s int) (lo, hi int) {
	base, rem := p.length/p.n, p.length%p.n
	lo = s*base + min(s, rem)
	hi = lo + base
	if s < rem {
		hi++
	}
	return lo, hi
}

func (p plan) chunks(s int) int {
	lo, hi := p.seg(s)
	return max(1, (hi-lo+p.ce-1)/p.ce)
}

func (p plan) chunk(s, k int) (lo, hi int) {
	slo, shi := p.seg(s)
	lo = min(slo+k*p.ce, shi)
	return lo, min(lo+p.ce, shi)
}

// AllReduce replaces data, in place, by the element-wise sum of data over
// all ranks; every rank ends with bitwise identical bytes. All ranks must
// call it with the same step and the same len(data); calls on one Ring must
// come one at a time, in the same order on every rank. Sub-slices of a
// larger vector may be reduced in separate calls (buckets), with the same
// boundaries on every rank.
//
// It fails, rather than hang, when a neighbour is dead or stalled for
// longer than Config.Timeout (the error wraps context.DeadlineExceeded), when
// a neighbour closes, when ctx ends, or when a chunk for another step arrives
// ([ErrStep]). After a failure the Ring is broken and data holds partial
// sums: the caller abandons the step and re-forms the ring.
//
// With world size 1 it returns nil at once and leaves data as it is.
func (r *Ring) AllReduce(ctx context.Context, step int64, data []float32) error {
	if r.cfg.Size == 1 {
		return nil
	}
	if !r.op.TryLock() {
		return fmt.Errorf("allreduce: rank %d step %d: AllReduce called while another call is running; call it from one goroutine, in the same order on every rank", r.cfg.Rank, step)
	}
	defer r.op.Unlock()
	r.mu.Lock()
	broken, out := r.broken, r.out
	r.mu.Unlock()
	if broken != nil {
		return r.brokenErr()
	}
	if out == nil {
		return fmt.Errorf("allreduce: rank %d: not connected to the next rank: call Connect first", r.cfg.Rank)
	}
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	p := plan{n: r.cfg.Size, rank: r.cfg.Rank, length: len(data), ce: r.chunkElems}
	if err := r.run(ctx, out, p, step, data); err != nil {
		r.log.Warn("allreduce: step failed; the ring is broken", "rank", r.cfg.Rank, "step", step, "error", err)
		return err
	}
	return nil
}

// Average is AllReduce followed by a division of every element by the
// world size (the same float32 division on every rank, so the ranks still
// agree bitwise). With world size 1 it leaves data as it is.
func (r *Ring) Average(ctx context.Context, step int64, data []float32) error {
	if err := r.AllReduce(ctx, step, data); err != nil {
		return err
	}
	if r.cfg.Size > 1 {
		n := float32(r.cfg.Size)
		for i := range data {
			data[i] /= n
		}
	}
	return nil
}

// run is one all-reduce: a sender goroutine streams this rank's chunks to
// the next rank while this goroutine adds (or copies) the chunks from the
// previous rank; every chunk received, except in the last phase, releases
// one token that lets the sender forward it.
func (r *Ring) run(ctx context.Context, out *outbound, p plan, step int64, data []float32) (err error) {
	nfwd := 0
	for ph := 0; ph < p.phases()-1; ph++ {
		nfwd += p.chunks(p.recvSeg(ph))
	}
	tokens := make(chan struct{}, nfwd)
	sendDone := make(chan error, 1)
	sctx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	go func() { sendDone <- r.sendAll(sctx, out, p, step, data, tokens) }()
	sent := false
	defer func() {
		if err != nil {
			r.fail(err) // cancels the outbound stream: a blocked Send returns
			stopSend()
			if !sent {
				<-sendDone // the sender reads data: it must stop before we return
			}
		}
	}()

	where := func(what string) string {
		return fmt.Sprintf("allreduce: rank %d step %d: %s", r.cfg.Rank, step, what)
	}
	sendc := sendDone
	for ph := 0; ph < p.phases(); ph++ {
		s := p.recvSeg(ph)
		nch := p.chunks(s)
		for k := 0; k < nch; k++ {
			var c *rxChunk
		wait:
			for {
				select {
				case c = <-r.inbox:
					break wait
				case err := <-sendc:
					sent = true
					if err != nil {
						return err
					}
					sendc = nil
				case <-ctx.Done():
					return fmt.Errorf("%s: waiting for chunk %d/%d of phase %d/%d from rank %d: %w",
						where("no data"), k+1, nch, ph+1, p.phases(), r.prev(), ctx.Err())
				case <-r.dead:
					return r.brokenErr()
				}
			}
			if c.step != step {
				return fmt.Errorf("%w: rank %d got a chunk for step %d from rank %d while reducing step %d; the ranks are out of step: abandon the step and re-form the ring",
					ErrStep, r.cfg.Rank, c.step, r.prev(), step)
			}
			lo, hi := p.chunk(s, k)
			if c.total != uint64(p.length) {
				return fmt.Errorf("%s: rank %d is reducing a vector of %d elements, this rank %d: every rank must pass the same length",
					where("length mismatch"), r.prev(), c.total, p.length)
			}
			if int(c.phase) != ph || c.offset != uint64(lo) || c.n != 4*(hi-lo) {
				return fmt.Errorf("%s: got phase %d offset %d (%d bytes) from rank %d, expected phase %d offset %d (%d bytes)",
					where("protocol error"), c.phase, c.offset, c.n, r.prev(), ph, lo, 4*(hi-lo))
			}
			c.apply(data[lo:hi], ph >= p.n-1)
			c.release()
			if ph < p.phases()-1 {
				tokens <- struct{}{}
			}
		}
	}
	if !sent {
		select {
		case err := <-sendDone:
			sent = true
			return err
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting to send to rank %d: %w", where("stalled"), r.next(), ctx.Err())
		case <-r.dead:
			return r.brokenErr()
		}
	}
	return nil
}

// sendAll streams this rank's part of the schedule to the next rank.
func (r *Ring) sendAll(ctx context.Context, out *outbound, p plan, step int64, data []float32, tokens <-chan struct{}) error {
	c := &txChunk{step: step, total: uint64(len(data))}
	for ph := 0; ph < p.phases(); ph++ {
		s := p.sendSeg(ph)
		for k := range p.chunks(s) {
			if ph > 0 {
				select {
				case <-tokens:
				case <-ctx.Done():
					return fmt.Errorf("allreduce: rank %d step %d: waiting for data to forward to rank %d: %w", r.cfg.Rank, step, r.next(), ctx.Err())
				}
			}
			lo, hi := p.chunk(s, k)
			c.phase = int32(ph)
			c.offset = uint64(lo)
			c.data = data[lo:hi]
			if err := out.stream.SendMsg(c); err != nil {
				if errors.Is(err, io.EOF) {
					// The next rank ended the stream; the goroutine reading
					// its status breaks the ring with the reason.
					select {
					case <-r.dead:
						return r.brokenErr()
					case <-ctx.Done():
					}
				}
				return fmt.Errorf("allreduce: rank %d step %d: send to next rank %d at %s: %w", r.cfg.Rank, step, r.next(), out.addr, describe(err))
			}
		}
	}
	return nil
}
