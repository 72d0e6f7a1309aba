package coordinator

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/control"
)

// recordingStream is a session's stream that records what the coordinator
// sends.
type recordingStream struct {
	grpc.BidiStreamingServer[cluster.FromWorker, cluster.ToWorker]
	mu   sync.Mutex
	sent []*cluster.ToWorker
}

func (s *recordingStream) Send(m *cluster.ToWorker) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, m)
	return nil
}

// TestMessagesKeepTheirOrder: what the core sends one worker (set-ups,
// tasks) reaches it in the order sent, though sending never blocks the
// core. Each message once had a goroutine of its own, so a set-up could
// overtake the one before it.
func TestMessagesKeepTheirOrder(t *testing.T) {
	st := &recordingStream{}
	r := &workerSession{name: "w", session: 1, stream: st, kill: make(chan struct{}), ended: make(chan struct{})}
	c := &Remote{sessions: map[uint64]*workerSession{1: r}}
	const n = 300
	for i := range n {
		c.Task(&control.Task{Worker: "w", Gen: 1, Step: int64(i), Indices: []int{i}}, 0)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st.mu.Lock()
		got := len(st.sent)
		st.mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages sent after 10 s", got, n)
		}
		time.Sleep(time.Millisecond)
	}
	for i, m := range st.sent {
		if s := m.GetTask().GetStep(); s != int64(i) {
			t.Fatalf("message %d is the task of step %d: the worker would get them out of order", i, s)
		}
	}
}
