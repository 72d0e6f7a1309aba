package coordinator

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/trainstate"
)

// Member is a worker the coordinator drives in its own process
// (worker.Member is one): single-machine training is the core with one
// such member, and the same step code runs as on a cluster's workers.
type Member interface {
	Name() string
	Setup(gen uint64, rank, size int, st trainstate.Replica) (addr string, err error)
	Step(ctx context.Context, t *control.Task, tracked int64) *control.Report
}

// Local is the Transport to in-process members. They join when it starts
// and stay until it closes.
type Local struct {
	members map[string]*localMember
	order   []string
	events  chan<- control.Event
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	rejoins atomic.Uint64
}

type localMember struct {
	Member
	mu      sync.Mutex // one call at a time (a Setup waits for the step in flight)
	session atomic.Uint64
}

// NewLocal makes a transport to the given members.
func NewLocal(members ...Member) *Local {
	l := &Local{members: map[string]*localMember{}}
	for _, m := range members {
		l.members[m.Name()] = &localMember{Member: m}
		l.order = append(l.order, m.Name())
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Start implements Transport.
func (l *Local) Start(events chan<- control.Event) {
	l.events = events
	for i, name := range l.order {
		l.members[name].session.Store(uint64(i + 1))
		events <- control.Join{Worker: name, Session: uint64(i + 1)}
	}
}

func (l *Local) post(ev control.Event) {
	select {
	case l.events <- ev:
	case <-l.ctx.Done():
	}
}

// Setup implements Transport. The member copies the state in its own
// goroutine: nothing is committed before it answers Ready.
func (l *Local) Setup(worker string, gen uint64, rank, size int, st trainstate.Replica) {
	m := l.members[worker]
	l.wg.Go(func() {
		m.mu.Lock()
		addr, err := m.Setup(gen, rank, size, st)
		m.mu.Unlock()
		if err != nil {
			l.post(control.Leave{Worker: worker, Session: m.session.Load(), Reason: "setup: " + err.Error()})
			return
		}
		l.post(control.Ready{Worker: worker, Gen: gen, Addr: addr})
	})
}

// Task implements Transport.
func (l *Local) Task(t *control.Task, tracked int64) {
	m := l.members[t.Worker]
	l.wg.Go(func() {
		m.mu.Lock()
		rep := m.Step(l.ctx, t, tracked)
		m.mu.Unlock()
		l.post(rep)
	})
}

// Drop implements Transport. An in-process member is not disconnected: it
// is set up again when the core admits it back.
func (l *Local) Drop(worker string, session uint64, outcome cluster.Outcome, reason string) {
	if outcome == cluster.Outcome_DROPPED {
		s := uint64(len(l.order)) + l.rejoins.Add(1)
		l.members[worker].session.Store(s)
		l.wg.Go(func() { l.post(control.Join{Worker: worker, Session: s}) })
	}
}

// Close implements Transport: it cancels a step in flight and waits for it.
func (l *Local) Close(cluster.Outcome, string) {
	l.cancel()
	l.wg.Wait()
}
