package coordinator

// The cluster transport (protocol in cluster/cluster.proto). A worker opens
// one authenticated bidirectional Session and sends Hello{name}; the
// coordinator answers Welcome{config, gossip address and profile, ring
// timeout, session id}, and the worker joins the memberlist gossip (AES key
// derived from the secret) as NAME#SESSION. The core then drives it:
//
//	Setup{generation, rank, size, committed state} → every ring member
//	Ready{generation, ring address}                ← each
//	Task{generation, step, share, next rank's ring address, ...} → each
//	Report{generation, step, loss, count, checksum, [rank 0 at a snapshot: state]} ← each
//	Stop{outcome, reason}                           → a dropped, excluded or every worker at the end
//
// A worker computes its share's gradient weighted by count/batch, sums it
// around the ring bucket by bucket while backward is still running, then
// the weighted BN buffers, applies the sums and reports the checksum of
// its replica. Everything this file learns becomes an event for the core
// (Join, Leave, Suspect from memberlist, Ready, Report); every decision
// (who is in the ring, what is abandoned, who is dropped) is the core's.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/trainstate"
)

// RemoteOptions configure the coordinator's side of a cluster.
type RemoteOptions struct {
	Listen string // gRPC address for workers, e.g. "127.0.0.1:7070"
	Secret []byte // the cluster secret (required)
	// Security is mutual TLS (cluster.LoadTLS) or plaintext, which is
	// refused unless Listen and GossipBind are loopback addresses.
	Security      *cluster.Security
	HelloTimeout  time.Duration // how long a new session may take to answer the challenge (default 10 s)
	GossipBind    string        // memberlist bind address host:port ("" → 127.0.0.1:0; port 0 picks one)
	GossipProfile string        // memberlist timing: lan (default), wan, local (loopback only)
	Advertise     string        // host workers reach the gossip at ("": GossipBind's, or this machine's address when that is 0.0.0.0)
	RingTimeout   time.Duration // the workers' all-reduce deadline (default 60 s)
	// DuplicateWait is how long a worker that names itself as a live
	// session of another process waits for that session to end (a
	// restarted worker whose old connection is not yet known dead) before
	// it is refused as a duplicate --name (default 10 s).
	DuplicateWait time.Duration
	// DatasetHash and DatasetPath name the training set the coordinator
	// opened (dataset.Manifest.ContentHash, and host:folder): every Setup
	// carries them, and a worker whose set differs refuses the run before
	// it computes anything. "" (a set without a manifest): not checked.
	DatasetHash, DatasetPath string
	Log                      *slog.Logger
	// OnConnect, if set, is called when a worker has connected (tests).
	OnConnect func(name string)
}

// Remote is the Transport to remote workers: it serves the Coordinator
// gRPC service, keeps membership with memberlist, and turns what happens
// into events for the core.
type Remote struct {
	cluster.UnimplementedCoordinatorServer
	opt     RemoteOptions
	log     *slog.Logger
	cfgYAML []byte
	// the network the run trains, described in each Setup (model.Config.Describe)
	imageSize int
	modelCfg  model.Config
	lis       net.Listener
	srv       *grpc.Server
	ml        *memberlist.Memberlist
	junk      *cluster.Junk

	mu       sync.Mutex
	sessions map[uint64]*workerSession
	seq      uint64
	events   chan<- control.Event
	started  chan struct{} // closed by Start
	stopping bool
	quit     chan struct{} // closed when Close begins
	setupGen uint64        // the generation whose state setupMsg encodes
	setupMsg *cluster.Setup
}

// workerSession is a connected worker: its stream and what was sent on it.
type workerSession struct {
	name     string
	instance string
	session  uint64
	addr     string
	stream   grpc.BidiStreamingServer[cluster.FromWorker, cluster.ToWorker]
	sendMu   sync.Mutex
	// outbox holds what the core posted and the sender has not sent yet:
	// one sender at a time drains it in order, so the core never waits on
	// a slow stream and a worker gets its messages in the order decided.
	outMu    sync.Mutex
	outbox   []outgoing
	sending  bool
	kill     chan struct{}
	ended    chan struct{} // closed when the session is over
	killOnce sync.Once
	why      error
}

func (r *workerSession) send(m *cluster.ToWorker) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.stream.Send(m)
}

// outgoing is a posted message; what names it in the error that ends the
// session when it cannot be sent ("": a failure is not the session's end).
type outgoing struct {
	m    *cluster.ToWorker
	what string
}

// post sends m after everything posted before it, without waiting.
func (r *workerSession) post(m *cluster.ToWorker, what string) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	r.outbox = append(r.outbox, outgoing{m, what})
	if !r.sending {
		r.sending = true
		go r.drain()
	}
}

func (r *workerSession) drain() {
	for {
		r.outMu.Lock()
		if len(r.outbox) == 0 {
			r.sending = false
			r.outMu.Unlock()
			return
		}
		o := r.outbox[0]
		r.outbox[0] = outgoing{}
		r.outbox = r.outbox[1:]
		r.outMu.Unlock()
		if err := r.send(o.m); err != nil && o.what != "" {
			r.die(fmt.Errorf("%s: %w", o.what, err))
		}
	}
}

func (r *workerSession) die(err error) {
	r.killOnce.Do(func() { r.why = err; close(r.kill) })
}

// StartRemote starts the gRPC service and the membership gossip.
func StartRemote(cfg *config.Config, opt RemoteOptions) (*Remote, error) {
	if len(opt.Secret) == 0 {
		return nil, errors.New("cluster secret is empty: set TINCT_CLUSTER_SECRET or --secret-file")
	}
	if opt.Security == nil {
		return nil, errors.New("cluster: no transport security given (TLS, or plaintext on loopback)")
	}
	if opt.HelloTimeout <= 0 {
		opt.HelloTimeout = 10 * time.Second
	}
	if opt.RingTimeout <= 0 {
		opt.RingTimeout = 60 * time.Second
	}
	if opt.DuplicateWait <= 0 {
		opt.DuplicateWait = 10 * time.Second
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.GossipBind == "" {
		opt.GossipBind = "127.0.0.1:0"
	}
	if err := opt.Security.Check(opt.Listen, opt.GossipBind); err != nil {
		return nil, err
	}
	c := &Remote{opt: opt, log: opt.Log, cfgYAML: cfg.YAML(), imageSize: cfg.ImageSize, modelCfg: cfg.ModelConfig(),
		sessions: map[uint64]*workerSession{}, started: make(chan struct{}), quit: make(chan struct{})}
	lis, err := net.Listen("tcp", opt.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster listen %q: %w", opt.Listen, err)
	}
	c.junk = &cluster.Junk{Log: c.log, Port: "coordinator " + lis.Addr().String()}
	if !opt.Security.Encrypted() {
		lis = cluster.WatchPreface(lis, c.junk)
	}
	c.lis = lis
	c.ml, err = cluster.StartGossip(cluster.GossipOptions{Name: "coordinator", Bind: opt.GossipBind, Advertise: opt.Advertise, Secret: opt.Secret, Profile: opt.GossipProfile, Events: (*gossipEvents)(c), Log: c.log})
	if err != nil {
		lis.Close()
		return nil, err
	}
	c.srv = grpc.NewServer(grpc.Creds(opt.Security.Creds(c.junk)), grpc.MaxRecvMsgSize(1<<30), grpc.MaxSendMsgSize(1<<30),
		// pings find a worker whose host died or whose network broke
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	cluster.RegisterCoordinatorServer(c.srv, c)
	go func() { _ = c.srv.Serve(lis) }()
	c.log.Info("coordinator listening for workers", "addr", c.Addr(), "gossip", c.GossipAddr(), "tls", opt.Security.Encrypted())
	return c, nil
}

// Addr is the gRPC address workers join; GossipAddr memberlist's.
func (c *Remote) Addr() string { return c.lis.Addr().String() }
func (c *Remote) GossipAddr() string {
	n := c.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// post delivers an event to the core, unless the transport is closing.
func (c *Remote) post(ev control.Event) {
	select {
	case <-c.started:
	case <-c.quit:
		return
	}
	select {
	case c.events <- ev:
	case <-c.quit:
	}
}

// Start implements Transport.
func (c *Remote) Start(events chan<- control.Event) {
	c.events = events
	close(c.started)
}

type gossipEvents Remote

func (g *gossipEvents) NotifyJoin(*memberlist.Node)   {}
func (g *gossipEvents) NotifyUpdate(*memberlist.Node) {}
func (g *gossipEvents) NotifyLeave(n *memberlist.Node) {
	c := (*Remote)(g)
	name, sess, ok := strings.Cut(n.Name, "#")
	id, err := strconv.ParseUint(sess, 10, 64)
	if !ok || err != nil {
		return
	}
	c.mu.Lock()
	r := c.sessions[id]
	stopping := c.stopping
	c.mu.Unlock()
	if r != nil && r.name == name && !stopping {
		c.log.Warn("memberlist: worker failed or left", "worker", name, "addr", n.Address())
		go c.post(control.Suspect{Worker: name, Session: id, Reason: "memberlist reports it failed or left"})
	}
}

// Session is one worker's life in the cluster.
func (c *Remote) Session(stream grpc.BidiStreamingServer[cluster.FromWorker, cluster.ToWorker]) error {
	addr := "?"
	if p, ok := peer.FromContext(stream.Context()); ok {
		addr = p.Addr.String()
	}
	hello, auth, err := c.authenticate(stream, addr)
	if err != nil {
		return err
	}
	// A session of this name from another process: a duplicate --name, or
	// the same worker restarted before its dead session's end reached
	// this coordinator. Wait (DuplicateWait) for that session to end;
	// only a live one refuses the newcomer, which then exits.
	grace := time.NewTimer(c.opt.DuplicateWait)
	defer grace.Stop()
	var stale *workerSession
	for {
		c.mu.Lock()
		if c.stopping {
			c.mu.Unlock()
			return status.Error(codes.Unavailable, "coordinator is stopping")
		}
		stale = nil
		for _, o := range c.sessions {
			if o.name == hello.Name {
				stale = o
			}
		}
		if stale == nil || (stale.instance == hello.Instance && hello.Instance != "") {
			break
		}
		c.mu.Unlock()
		select {
		case <-stale.ended:
			continue
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-c.quit:
			return status.Error(codes.Unavailable, "coordinator is stopping")
		case <-grace.C:
		}
		c.log.Warn("refused a worker: name in use", "worker", hello.Name, "from", addr, "in_use_by", stale.addr)
		return status.Errorf(codes.AlreadyExists, "a worker named %q (from %s) is already in the cluster: give each worker its own --name", hello.Name, stale.addr)
	}
	c.seq++
	r := &workerSession{name: hello.Name, instance: hello.Instance, session: c.seq, addr: addr, stream: stream, kill: make(chan struct{}), ended: make(chan struct{})}
	c.sessions[r.session] = r
	c.mu.Unlock()
	if stale != nil {
		// the same worker process again: its old session is dead to it
		stale.die(errors.New("replaced by a new session of the same worker"))
	}
	var cause error
	defer close(r.ended)
	defer func() {
		c.mu.Lock()
		delete(c.sessions, r.session)
		c.mu.Unlock()
		c.post(control.Leave{Worker: r.name, Session: r.session, Reason: fmt.Sprint(cause)})
	}()
	if err := r.send(&cluster.ToWorker{Body: &cluster.ToWorker_Welcome{Welcome: &cluster.Welcome{ConfigYaml: c.cfgYAML, GossipAddr: c.GossipAddr(),
		GossipProfile: c.opt.GossipProfile, RingTimeoutMs: c.opt.RingTimeout.Milliseconds(), Session: r.session, Proof: auth.CoordinatorProof()}}}); err != nil {
		cause = err
		return err
	}
	c.log.Info("worker connected", "worker", r.name, "from", addr, "session", r.session)
	if c.opt.OnConnect != nil {
		c.opt.OnConnect(r.name)
	}
	c.post(control.Join{Worker: r.name, Session: r.session})
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch b := m.Body.(type) {
			case *cluster.FromWorker_Ready:
				c.post(control.Ready{Worker: r.name, Gen: b.Ready.Generation, Addr: b.Ready.RingAddr})
			case *cluster.FromWorker_Report:
				rep, err := reportOf(r.name, b.Report)
				if err != nil {
					rep = &control.Report{Worker: r.name, Gen: b.Report.Generation, Step: b.Report.Step, Err: err.Error()}
				}
				c.post(rep)
			case *cluster.FromWorker_Refuse:
				// the worker exits: it will not take part in this run
				c.log.Error("worker refused the run", "worker", r.name, "reason", b.Refuse.Reason)
				r.die(fmt.Errorf("it refused the run: %s", b.Refuse.Reason))
			}
		}
	}()
	select {
	case err := <-recvErr:
		cause = connectionLost(err)
	case <-r.kill:
		cause = r.why
	case <-stream.Context().Done():
		cause = connectionLost(stream.Context().Err())
	}
	c.mu.Lock()
	stopping := c.stopping
	c.mu.Unlock()
	if !stopping {
		c.log.Warn("worker lost", "worker", r.name, "session", r.session, "cause", cause)
	}
	return status.Error(codes.Aborted, cause.Error())
}

// connectionLost says why a session's stream ended in words: a stream
// whose context is canceled, or that reads EOF, lost its connection — the
// worker died, closed it, or the network between them broke.
func connectionLost(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return fmt.Errorf("the connection closed: the worker stopped or died, or the network broke (%w)", err)
	}
	return fmt.Errorf("connection lost: %w", err)
}

// authenticate challenges a new session and checks the worker's Hello
// (cluster/auth.go); a stranger that stays silent is cut off after
// HelloTimeout.
func (c *Remote) authenticate(stream grpc.BidiStreamingServer[cluster.FromWorker, cluster.ToWorker], addr string) (*cluster.Hello, cluster.SessionAuth, error) {
	auth := cluster.SessionAuth{Secret: c.opt.Secret, Method: cluster.Coordinator_Session_FullMethodName, Challenge: cluster.Nonce(), Channel: cluster.Binding(stream.Context())}
	if err := stream.Send(&cluster.ToWorker{Body: &cluster.ToWorker_Challenge{Challenge: &cluster.Challenge{Nonce: auth.Challenge}}}); err != nil {
		return nil, auth, err
	}
	got := make(chan *cluster.FromWorker, 1)
	go func() {
		m, _ := stream.Recv()
		got <- m // nil when the stream ended
	}()
	var first *cluster.FromWorker
	select {
	case first = <-got:
	case <-time.After(c.opt.HelloTimeout):
		c.junk.Report(addr, fmt.Sprintf("opened a session but did not answer the challenge within %v", c.opt.HelloTimeout))
		return nil, auth, status.Errorf(codes.DeadlineExceeded, "no answer to the challenge within %v", c.opt.HelloTimeout)
	}
	hello := first.GetHello()
	if hello == nil || hello.Name == "" || strings.Contains(hello.Name, "#") {
		c.junk.Report(addr, "a session whose first message is not a Hello with a worker name")
		return nil, auth, status.Error(codes.InvalidArgument, "first message must be a Hello with a worker name (without '#')")
	}
	auth.Name, auth.Instance, auth.Nonce = hello.Name, hello.Instance, hello.Nonce
	if !auth.Check(hello.Mac) {
		c.log.Warn("refused a worker that failed authentication (wrong cluster secret, or a replayed Hello)", "worker", hello.Name, "from", addr)
		return nil, auth, status.Error(codes.Unauthenticated, "the worker's proof of the cluster secret is wrong for this session (is TINCT_CLUSTER_SECRET the same on both?)")
	}
	return hello, auth, nil
}

// reportOf decodes a report. A snapshot's state (a trainstate.Replica in
// State) is decoded at the lengths its weights and buffers have: the
// vectors must agree with each other here, and with the network when the
// committed state loads it (trainstate.State.Load, which keeps its own
// Adam constants and EMA rule: a report carries neither, so they are zero).
func reportOf(name string, m *cluster.Report) (*control.Report, error) {
	r := &control.Report{Worker: name, Gen: m.Generation, Step: m.Step, Loss: m.Loss, Count: int(m.Count), Checksum: m.Checksum, RingSeconds: m.ReduceSeconds, Err: m.Error, RingFault: m.RingFault}
	if m.State != nil {
		st, err := trainstate.DecodeReplica(m.State, len(m.State.Params)/4, len(m.State.Buffers)/4, 0, 0, 0, 0, model.EMA{})
		if err != nil {
			return nil, fmt.Errorf("snapshot of step %d: %w", m.Step, err)
		}
		r.State = st
	}
	return r, nil
}

func (c *Remote) byName(worker string) *workerSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	var found *workerSession
	for _, r := range c.sessions {
		if r.name == worker && (found == nil || r.session > found.session) {
			found = r
		}
	}
	return found
}

// Setup implements Transport; the state is encoded once per generation.
func (c *Remote) Setup(worker string, gen uint64, rank, size int, step int64, st trainstate.Replica) {
	r := c.byName(worker)
	if r == nil {
		return // gone: its Leave is on the way
	}
	if c.setupMsg == nil || c.setupGen != gen {
		c.setupGen = gen
		c.setupMsg = &cluster.Setup{State: trainstate.EncodeReplica(st),
			Lr: st.Adam.LR, Beta1: st.Adam.Beta1, Beta2: st.Adam.Beta2, Eps: st.Adam.Eps,
			EmaDecay: st.Rule.Decay, EmaCopyBuffers: st.Rule.CopyBuffers,
			DatasetHash: c.opt.DatasetHash, DatasetPath: c.opt.DatasetPath, Model: c.modelCfg.Describe(c.imageSize, len(st.Params))}
	}
	m := c.setupMsg
	s := &cluster.Setup{Generation: gen, Rank: int32(rank), Size: int32(size), Step: step, State: m.State,
		Lr: m.Lr, Beta1: m.Beta1, Beta2: m.Beta2, Eps: m.Eps, EmaDecay: m.EmaDecay, EmaCopyBuffers: m.EmaCopyBuffers,
		DatasetHash: m.DatasetHash, DatasetPath: m.DatasetPath, Model: m.Model}
	r.post(&cluster.ToWorker{Body: &cluster.ToWorker_Setup{Setup: s}}, "send setup")
}

// Task implements Transport.
func (c *Remote) Task(t *control.Task, tracked int64) {
	r := c.byName(t.Worker)
	if r == nil {
		return
	}
	ind := make([]int32, len(t.Indices))
	for k, v := range t.Indices {
		ind[k] = int32(v)
	}
	r.post(&cluster.ToWorker{Body: &cluster.ToWorker_Task{Task: &cluster.Task{Generation: t.Gen, Step: t.Step, Epoch: int32(t.Epoch), Indices: ind,
		Seed: t.Seed, Flip: t.Flip, Batch: int32(t.Batch), Tracked: tracked, NextAddr: t.Next, Snapshot: t.Snapshot, SendState: t.SendState}}}, "send task")
}

// Drop implements Transport: the worker is told why, then its session ends.
func (c *Remote) Drop(worker string, session uint64, outcome cluster.Outcome, reason string) {
	c.mu.Lock()
	r := c.sessions[session]
	c.mu.Unlock()
	if r == nil {
		return
	}
	go r.stop(outcome, reason, errors.New("dropped: "+reason))
}

// stop tells the worker the outcome and waits for it to end the session; a
// stalled one is cut off after a grace period (the send itself may block).
func (r *workerSession) stop(outcome cluster.Outcome, reason string, cause error) {
	r.post(&cluster.ToWorker{Body: &cluster.ToWorker_Stop{Stop: &cluster.Stop{Reason: reason, Outcome: outcome}}}, "")
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-r.ended:
	case <-t.C:
	}
	r.die(cause)
}

// Close implements Transport: it tells every worker the outcome and stops
// the service and the gossip.
func (c *Remote) Close(outcome cluster.Outcome, reason string) {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return
	}
	c.stopping = true
	close(c.quit)
	rs := make([]*workerSession, 0, len(c.sessions))
	for _, r := range c.sessions {
		rs = append(rs, r)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			r.stop(outcome, reason, errors.New("coordinator stopped"))
			<-r.ended
		})
	}
	wg.Wait()
	c.srv.Stop()
	_ = c.ml.Shutdown()
}
