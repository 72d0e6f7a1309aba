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
// and stay until it closes. Each member works through its set-ups and
// tasks in order, one at a time, in a goroutine of its own, as a remote
// worker does: the core keeps the next steps queued while one runs.
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
	session atomic.Uint64

	mu      sync.Mutex
	queue   []func(ctx context.Context)
	wake    chan struct{}      // something was queued
	stopRun context.CancelFunc // cancels the job running
}

// NewLocal makes a transport to the given members.
func NewLocal(members ...Member) *Local {
	l := &Local{members: map[string]*localMember{}}
	for _, m := range members {
		l.members[m.Name()] = &localMember{Member: m, wake: make(chan struct{}, 1)}
		l.order = append(l.order, m.Name())
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Start implements Transport.
func (l *Local) Start(events chan<- control.Event) {
	l.events = events
	for i, name := range l.order {
		m := l.members[name]
		m.session.Store(uint64(i + 1))
		l.wg.Go(func() { l.work(m) })
		events <- control.Join{Worker: name, Session: uint64(i + 1)}
	}
}

// work runs m's jobs in order until the transport closes.
func (l *Local) work(m *localMember) {
	for {
		m.mu.Lock()
		if len(m.queue) == 0 {
			m.mu.Unlock()
			select {
			case <-m.wake:
				continue
			case <-l.ctx.Done():
				return
			}
		}
		job := m.queue[0]
		m.queue = m.queue[1:]
		ctx, cancel := context.WithCancel(l.ctx)
		m.stopRun = cancel
		m.mu.Unlock()
		job(ctx)
		cancel()
	}
}

// enqueue adds a job; a set-up first cancels the step running and drops
// the steps queued, which belong to a generation given up.
func (m *localMember) enqueue(job func(ctx context.Context), setup bool) {
	m.mu.Lock()
	if setup {
		m.queue = m.queue[:0]
		if m.stopRun != nil {
			m.stopRun()
		}
	}
	m.queue = append(m.queue, job)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
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
func (l *Local) Setup(worker string, gen uint64, rank, size int, _ int64, st trainstate.Replica) {
	m := l.members[worker]
	m.enqueue(func(context.Context) {
		addr, err := m.Setup(gen, rank, size, st)
		if err != nil {
			l.post(control.Leave{Worker: worker, Session: m.session.Load(), Reason: "setup: " + err.Error()})
			return
		}
		l.post(control.Ready{Worker: worker, Gen: gen, Addr: addr})
	}, true)
}

// Task implements Transport.
func (l *Local) Task(t *control.Task, tracked int64) {
	m := l.members[t.Worker]
	m.enqueue(func(ctx context.Context) { l.post(m.Step(ctx, t, tracked)) }, false)
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
