package control

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// TestScenarios runs the scripts in testdata/: events in, the core's
// actions out (go test ./control -rewrite regenerates the expected output).
//
// Commands (worker names are free words; times are Go durations):
//
//	init examples=N batch=N epochs=N [min_workers=N] [checkpoint_every=N] [wait=D]
//	     [step_timeout=D] [setup_timeout=D] [backoff=D] [max_failures=N]
//	     [snapshot_every=N] [window=N]
//	     [epoch=N step_in_epoch=N step=N]   (resume at that position, saved)
//	join W...            a session opens for each worker
//	leave W...           its session ends
//	suspect W...         failure detection declares it dead
//	ready W... [gen=N]   answer the pending setup (default: its generation)
//	report W... [err=TEXT] [sum=TEXT] [gen=N] [step=N]
//	                     answer each worker's oldest pending task (checksum "ok" unless sum=)
//	applied [sum=TEXT]   answer the pending commit (checksum "ok" unless sum=)
//	pending              the tasks each worker has not answered yet
//	tick D               time passes
//	stop [err]           a signal (or, with err, a failure of the adapter)
//	run [steps=N]        answer everything pending successfully, until N more steps are
//	                     committed (default 1)
//	state                the position, the ring and every worker
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{t: t}
		datadriven.RunTest(t, path, h.do)
	})
}

type harness struct {
	t        *testing.T
	core     *Core
	now      time.Time
	sessions map[string]uint64
	nextSess uint64
	setup    *Setup
	tasks    map[string][]*Task // by worker, oldest first
	commit   *Commit
	commits  int // Committed actions seen
	out      strings.Builder
}

func (h *harness) handle(ev Event) {
	for _, a := range h.core.Handle(h.now, ev) {
		fmt.Fprintln(&h.out, a)
		switch a := a.(type) {
		case Setup:
			a.Ring = slices.Clone(a.Ring)
			h.setup, h.tasks = &a, map[string][]*Task{}
		case Formed:
			h.setup = nil
		case *Task:
			h.tasks[a.Worker] = append(h.tasks[a.Worker], a)
		case *Commit:
			h.commit = a
		case Committed:
			h.commits++
		case Abandon:
			h.setup, h.tasks = nil, map[string][]*Task{}
		case Drop:
			if h.sessions[a.Worker] == a.Session {
				delete(h.sessions, a.Worker)
			}
		case Exclude:
			if a.Session != 0 && h.sessions[a.Worker] == a.Session {
				delete(h.sessions, a.Worker)
			}
		}
	}
}

func (h *harness) do(t *testing.T, d *datadriven.TestData) string {
	h.out.Reset()
	args := map[string]string{}
	var words []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) > 0 {
			args[a.Key] = a.Vals[0]
		} else {
			words = append(words, a.Key)
		}
	}
	num := func(k string, def int) int {
		if v, ok := args[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				d.Fatalf(t, "%s=%s: %v", k, v, err)
			}
			return n
		}
		return def
	}
	dur := func(k string) time.Duration {
		if v, ok := args[k]; ok {
			x, err := time.ParseDuration(v)
			if err != nil {
				d.Fatalf(t, "%s=%s: %v", k, v, err)
			}
			return x
		}
		return 0
	}
	if d.Cmd != "init" && h.core == nil {
		d.Fatalf(t, "init first")
	}
	switch d.Cmd {
	case "init":
		cfg := Config{Examples: num("examples", 8), BatchSize: num("batch", 4), Epochs: num("epochs", 1), CheckpointEvery: num("checkpoint_every", 0),
			Seed: 1, MinWorkers: num("min_workers", 1), Wait: dur("wait"), StepTimeout: dur("step_timeout"), SetupTimeout: dur("setup_timeout"),
			Backoff: dur("backoff"), MaxFailures: num("max_failures", 0), SnapshotEvery: num("snapshot_every", 0), Window: num("window", 0)}
		pos := Position{Epoch: num("epoch", 0), StepInEpoch: num("step_in_epoch", 0), Step: int64(num("step", 0))}
		_, resumed := args["step"]
		c, err := New(cfg, pos, resumed)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		h.core, h.now = c, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		h.sessions, h.tasks = map[string]uint64{}, map[string][]*Task{}
		h.handle(Tick{})
	case "join":
		for _, w := range words {
			h.nextSess++
			h.sessions[w] = h.nextSess
			h.handle(Join{Worker: w, Session: h.nextSess})
		}
	case "leave":
		for _, w := range words {
			s := h.sessions[w]
			delete(h.sessions, w)
			h.handle(Leave{Worker: w, Session: s, Reason: "session ended"})
		}
	case "suspect":
		for _, w := range words {
			h.handle(Suspect{Worker: w, Session: h.sessions[w], Reason: "memberlist: failed"})
		}
	case "ready":
		if h.setup == nil {
			return "(no setup pending)\n"
		}
		gen := uint64(num("gen", int(h.setup.Gen)))
		for _, w := range words {
			h.handle(Ready{Worker: w, Gen: gen, Addr: "addr-" + w})
		}
	case "report":
		for _, w := range words {
			h.report(d, w, args)
		}
	case "applied":
		if h.commit == nil {
			return "(no commit pending)\n"
		}
		sum := "ok"
		if s, ok := args["sum"]; ok {
			sum = s
		}
		cm := h.commit
		h.commit = nil
		h.handle(Applied{Step: cm.Step, Checksum: []byte(sum)})
	case "tick":
		if len(words) != 1 {
			d.Fatalf(t, "tick DURATION")
		}
		x, err := time.ParseDuration(words[0])
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		h.now = h.now.Add(x)
		h.handle(Tick{})
	case "stop":
		var err error
		if slices.Contains(words, "err") {
			err = errors.New("adapter failed")
		}
		h.handle(Stop{Reason: "interrupted", Err: err})
	case "pending":
		for _, w := range slices.Sorted(maps.Keys(h.tasks)) {
			for _, tk := range h.tasks[w] {
				fmt.Fprintf(&h.out, "%s: step %d\n", w, tk.Step)
			}
		}
	case "run":
		// answer what is pending until N more steps were committed (N=0:
		// until tasks are out); fail=W makes W fail each task; each=D lets
		// D pass after every answer round
		target, bad, each := h.commits+num("steps", 1), args["fail"], dur("each")
		for rounds := 0; !h.core.Done() && rounds < 1000; rounds++ {
			switch {
			case h.commit != nil:
				cm := h.commit
				h.commit = nil
				h.handle(Applied{Step: cm.Step, Checksum: []byte("ok")})
			case h.setup != nil:
				s := h.setup
				for _, w := range s.Ring {
					if h.setup == s {
						h.handle(Ready{Worker: w, Gen: s.Gen, Addr: "addr-" + w})
					}
				}
			case h.anyTask() && h.commits < target:
				for _, w := range h.core.Ring() {
					if len(h.tasks[w]) > 0 {
						var a map[string]string
						if w == bad {
							a = map[string]string{"err": "fails every task"}
						}
						h.report(d, w, a)
					}
				}
			case h.anyTask():
				rounds = 1000
			default:
				fmt.Fprintf(&h.out, "(nothing pending)\n")
				rounds = 1000
			}
			if each > 0 && rounds < 1000 {
				h.now = h.now.Add(each)
				h.handle(Tick{})
			}
		}
	case "state":
		p := h.core.Position()
		fmt.Fprintf(&h.out, "position epoch=%d step_in_epoch=%d step=%d\n", p.Epoch, p.StepInEpoch, p.Step)
		fmt.Fprintf(&h.out, "ring gen=%d [%s] done=%t\n", h.core.gen, strings.Join(h.core.Ring(), " "), h.core.Done())
		var ns []string
		for n := range h.core.members {
			ns = append(ns, n)
		}
		slices.Sort(ns)
		for _, n := range ns {
			m := h.core.members[n]
			fmt.Fprintf(&h.out, "worker %s connected=%t failures=%d excluded=%t", n, m.session != 0, m.failures, m.excluded)
			if m.notBefore.After(h.now) {
				fmt.Fprintf(&h.out, " backed-off=%v", m.notBefore.Sub(h.now))
			}
			fmt.Fprintln(&h.out)
		}
	default:
		d.Fatalf(t, "unknown command %s", d.Cmd)
	}
	return h.out.String()
}

func (h *harness) anyTask() bool {
	for _, q := range h.tasks {
		if len(q) > 0 {
			return true
		}
	}
	return false
}

func (h *harness) report(d *datadriven.TestData, w string, args map[string]string) {
	var tk *Task
	if _, ok := args["gen"]; ok {
		tk = &Task{Worker: w, Indices: []int{0, 1}} // a report of some other task
	} else if q := h.tasks[w]; len(q) > 0 {
		tk, h.tasks[w] = q[0], q[1:]
	}
	if tk == nil {
		fmt.Fprintf(&h.out, "(no task pending for %s)\n", w)
		return
	}
	r := &Report{Worker: w, Gen: tk.Gen, Step: tk.Step, Loss: 0.5, Count: len(tk.Indices), Checksum: []byte("ok")}
	if tk.SendState {
		r.State = "state"
	}
	if v, ok := args["sum"]; ok {
		r.Checksum = []byte(v)
	}
	if v, ok := args["err"]; ok {
		r.Err = v
	}
	if v, ok := args["ringerr"]; ok {
		r.Err, r.RingFault = v, true
	}
	if v, ok := args["gen"]; ok {
		g, _ := strconv.ParseUint(v, 10, 64)
		r.Gen = g
	}
	if v, ok := args["step"]; ok {
		s, _ := strconv.ParseInt(v, 10, 64)
		r.Step = s
	}
	h.handle(r)
}

// TestSplit: shares are contiguous and differ in size by at most one.
func TestSplit(t *testing.T) {
	idx := []int{9, 8, 7, 6, 5, 4, 3}
	for n := 1; n <= 7; n++ {
		var all []int
		for _, s := range Split(idx, n) {
			if len(s) < len(idx)/n || len(s) > len(idx)/n+1 {
				t.Errorf("n=%d: share of %d", n, len(s))
			}
			all = append(all, s...)
		}
		if !slices.Equal(all, idx) {
			t.Errorf("n=%d: shares %v", n, all)
		}
	}
}

// TestDeadline: the core asks for a tick at the earliest of its deadlines.
func TestDeadline(t *testing.T) {
	c, err := New(Config{Examples: 8, BatchSize: 4, Epochs: 1, SetupTimeout: 5 * time.Second, Wait: time.Minute}, Position{}, false)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.Handle(t0, Tick{})
	if got := c.Deadline(); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("waiting for workers: deadline %v, want %v", got, t0.Add(time.Minute))
	}
	c.Handle(t0.Add(time.Second), Join{Worker: "w", Session: 1})
	if got := c.Deadline(); !got.Equal(t0.Add(6 * time.Second)) {
		t.Errorf("forming: deadline %v, want %v", got, t0.Add(6*time.Second))
	}
}
