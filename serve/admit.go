package serve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Defaults of Options' admission.
const (
	DefaultMaxPerClient     = 1                // requests a client may have uploading or queued at once
	DefaultAdmitWait        = 20 * time.Second // how long a request waits for a place or for memory
	DefaultFirstByteTimeout = 5 * time.Second  // an upload's first body byte, and the grace of its rate
)

// maxLine bounds the requests waiting for places of one kind: beyond it a
// request is refused at once.
const maxLine = 64

var (
	// errClientBusy: the client's earlier requests still hold its share.
	errClientBusy = errors.New("this client's earlier request is still being handled")
	// errPlacesFull: no place came free within the wait.
	errPlacesFull = errors.New("every place is taken")
)

// places bounds the requests of one kind (colorizations, gray previews)
// that hold memory for an upload at once: capacity places, granted first
// come first served to requests that wait for one (up to the admission
// wait), and at most perClient of them, waiting or holding, per client
// address (clientKey). So a client that stalls its uploads and reconnects
// after each 408 holds at most its share: a request that was waiting when
// the stalled one was cut off gets its place, and the reconnected one
// waits behind it.
type places struct {
	capacity  int
	perClient int // ≤ 0: no limit

	mu      sync.Mutex
	held    int
	line    []*placeWaiter // waiting for a place, first first
	clients map[string]int // each client's requests that count against its share
	changed chan struct{}  // closed (and replaced) when a client's count drops
}

type placeWaiter struct {
	ready   chan struct{} // closed when granted
	granted bool          // under mu
}

func newPlaces(capacity, perClient int) *places {
	return &places{capacity: capacity, perClient: perClient, clients: map[string]int{}, changed: make(chan struct{})}
}

// place is a request's place; leave frees it.
type place struct {
	p       *places
	client  string
	claimed bool // counts against the client's share
	left    bool
}

// enter takes a place for a request of client, waiting up to wait: first
// while the client's share is used by its earlier requests (errClientBusy
// when that lasts), then in line for a place (errPlacesFull). A wait of 0
// or less takes a place only when one is free at once. The caller must
// call leave.
func (p *places) enter(ctx context.Context, client string, wait time.Duration) (*place, error) {
	deadline := time.Now().Add(wait)
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	// the client's share
	p.mu.Lock()
	for p.perClient > 0 && p.clients[client] >= p.perClient {
		ch := p.changed
		p.mu.Unlock()
		if wait <= 0 {
			return nil, errClientBusy
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil, errClientBusy
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
	}
	p.clients[client]++
	pl := &place{p: p, client: client, claimed: true}
	// a place
	if len(p.line) == 0 && p.held < p.capacity {
		p.held++
		p.mu.Unlock()
		return pl, nil
	}
	if wait <= 0 || len(p.line) >= maxLine || time.Now().After(deadline) {
		p.unclaimLocked(pl)
		p.mu.Unlock()
		return nil, errPlacesFull
	}
	w := &placeWaiter{ready: make(chan struct{})}
	p.line = append(p.line, w)
	p.mu.Unlock()
	var err error
	select {
	case <-w.ready:
	case <-timer.C:
		err = errPlacesFull
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.granted {
		if ctx.Err() != nil {
			pl.leaveLocked()
			return nil, ctx.Err()
		}
		return pl, nil
	}
	p.line = slices.DeleteFunc(p.line, func(o *placeWaiter) bool { return o == w })
	p.unclaimLocked(pl)
	return nil, err
}

// unclaim stops counting the request against its client's share while it
// keeps its place (a colorization that starts to run: the client may
// send its next one).
func (pl *place) unclaim() {
	pl.p.mu.Lock()
	defer pl.p.mu.Unlock()
	pl.p.unclaimLocked(pl)
}

func (p *places) unclaimLocked(pl *place) {
	if !pl.claimed {
		return
	}
	pl.claimed = false
	if p.clients[pl.client]--; p.clients[pl.client] <= 0 {
		delete(p.clients, pl.client)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// leave frees the place: the first in line gets it.
func (pl *place) leave() {
	pl.p.mu.Lock()
	defer pl.p.mu.Unlock()
	pl.leaveLocked()
}

func (pl *place) leaveLocked() {
	p := pl.p
	if pl.left {
		return
	}
	pl.left = true
	p.unclaimLocked(pl)
	if len(p.line) > 0 {
		w := p.line[0]
		p.line = p.line[1:]
		w.granted = true
		close(w.ready)
		return
	}
	p.held--
}

// inUse returns the places held and the requests waiting for one.
func (p *places) inUse() (held, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held, len(p.line)
}

// clientKey names the client of a request for its share of places: the
// address the connection comes from (RemoteAddr; forwarding headers are
// not trusted), an IPv6 one by its /64 network, which one machine
// usually has whole.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		if pfx, err := a.Prefix(64); err == nil {
			return pfx.String()
		}
	}
	return a.String()
}
