package coordinator

// The cluster protocol (clusterpb/cluster.proto). A worker opens one
// authenticated bidirectional Session and sends Hello{name}; the coordinator
// answers Welcome{config, gossip address, ring timeout}, and the worker joins
// the memberlist gossip (AES key derived from the secret). Then, at step
// boundaries, whenever the ring failed or a worker joined:
//
//	Setup{generation, rank, size, committed state} → every live worker
//	Ready{generation, ring address}                ← each (by --setup-timeout)
//
// and for every step:
//
//	Task{generation, step, epoch, share of the batch, seed, flip, batch size,
//	     BN batches tracked, next rank's ring address, send_update (rank 0)}
//	Report{generation, step, loss, count, checksum, [rank 0: update]}  ← each
//
// A worker computes its share's gradient weighted by count/batch, sums it
// around the ring bucket by bucket while backward is still running
// (allreduce.Overlap fed by model.UNet.BackwardNotify), then the weighted BN
// buffers, applies the sums and reports the checksum of its weights and
// buffers. The coordinator
// applies rank 0's vector to its master copy and compares every checksum
// with its own; a mismatch stops training. A worker lost (stream ended,
// memberlist failure, --step-timeout, --setup-timeout) or a failed report
// abandons the step: nothing is committed, the ring is re-formed from the
// live workers with a new generation — every member is reloaded with the
// committed state, which also rolls back a survivor that had applied the
// abandoned step — and the step is retried with the new sharding.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/config"
	pb "github.com/tinct/tinct/coordinator/clusterpb"
	"github.com/tinct/tinct/worker"
)

// ErrTooFewWorkers: fewer than min_workers were connected for longer than
// the configured wait.
var ErrTooFewWorkers = errors.New("too few workers")

// maxAttempts bounds the consecutive failed tries of one step.
const maxAttempts = 20

// ClusterOptions configure the coordinator's side of a cluster.
type ClusterOptions struct {
	Listen       string        // gRPC address for workers, e.g. "127.0.0.1:7070"
	Secret       []byte        // the cluster secret (required)
	GossipBind   string        // memberlist bind address host:port ("" → 127.0.0.1:0; port 0 picks one)
	MinWorkers   int           // fewer: wait up to Wait, then fail (default 1)
	Wait         time.Duration // how long to wait for MinWorkers (default 60 s)
	StepTimeout  time.Duration // deadline for every worker's report of a step (default 10 min)
	SetupTimeout time.Duration // deadline for every worker to load the state and open its ring (default 60 s)
	RingTimeout  time.Duration // the workers' all-reduce deadline (default 60 s)
	Log          *slog.Logger
	// OnConnect, if set, is called when a worker has connected (tests).
	OnConnect func(name string)
}

// Cluster serves remote workers (service Coordinator in clusterpb), keeps
// membership with memberlist, forms rings and runs each step on them. Set
// it as Options.Cluster; Close it after Run.
type Cluster struct {
	pb.UnimplementedCoordinatorServer
	// set by each committed step, for the metrics
	lastReduce  float64 // the slowest worker's ring time after backward, seconds
	lastWorkers int     // workers that took part
	opt         ClusterOptions
	log         *slog.Logger
	cfgYAML     []byte
	lis         net.Listener
	srv         *grpc.Server
	ml          *memberlist.Memberlist
	verifier    *pb.Verifier

	mu       sync.Mutex
	byName   map[string]*remote
	seq      int
	stopping bool
	joined   chan struct{} // signalled when a worker connects
	events   chan event
	closed   chan struct{}
	quit     chan struct{} // closed when Close begins

	// owned by the training loop
	members []*remote
	addrs   []string
	gen     uint64
	dirty   bool
}

type remote struct {
	name     string
	seq      int
	addr     string
	stream   grpc.BidiStreamingServer[pb.FromWorker, pb.ToWorker]
	sendMu   sync.Mutex
	kill     chan struct{}
	ended    chan struct{} // closed when the session is over
	killOnce sync.Once
	why      error
}

func (r *remote) send(m *pb.ToWorker) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.stream.Send(m)
}

func (r *remote) die(err error) {
	r.killOnce.Do(func() { r.why = err; close(r.kill) })
}

type event struct {
	r      *remote
	ready  *pb.Ready
	report *pb.Report
	dead   error
}

// StartCluster starts the gRPC service and the membership gossip.
func StartCluster(cfg *config.Config, opt ClusterOptions) (*Cluster, error) {
	if len(opt.Secret) == 0 {
		return nil, errors.New("cluster secret is empty: set --secret or TINCT_CLUSTER_SECRET")
	}
	opt.MinWorkers = max(opt.MinWorkers, 1)
	if opt.Wait <= 0 {
		opt.Wait = 60 * time.Second
	}
	if opt.StepTimeout <= 0 {
		opt.StepTimeout = 10 * time.Minute
	}
	if opt.SetupTimeout <= 0 {
		opt.SetupTimeout = 60 * time.Second
	}
	if opt.RingTimeout <= 0 {
		opt.RingTimeout = 60 * time.Second
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	c := &Cluster{opt: opt, log: opt.Log, cfgYAML: cfg.YAML(), verifier: &pb.Verifier{Secret: opt.Secret},
		byName: map[string]*remote{}, joined: make(chan struct{}, 1), events: make(chan event, 4096), closed: make(chan struct{}), quit: make(chan struct{})}
	lis, err := net.Listen("tcp", opt.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster listen %q: %w", opt.Listen, err)
	}
	c.lis = lis
	if err := c.startGossip(); err != nil {
		lis.Close()
		return nil, err
	}
	c.srv = grpc.NewServer(grpc.MaxRecvMsgSize(1<<30), grpc.MaxSendMsgSize(1<<30), grpc.StreamInterceptor(c.auth), grpc.UnaryInterceptor(c.authUnary),
		// pings find a worker whose host died or whose network broke
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	pb.RegisterCoordinatorServer(c.srv, c)
	go func() { _ = c.srv.Serve(lis) }()
	c.log.Info("coordinator listening for workers", "addr", c.Addr(), "gossip", c.GossipAddr(), "min_workers", opt.MinWorkers)
	return c, nil
}

// Addr is the gRPC address workers join; GossipAddr memberlist's.
func (c *Cluster) Addr() string { return c.lis.Addr().String() }
func (c *Cluster) GossipAddr() string {
	n := c.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

func (c *Cluster) startGossip() error {
	bind := c.opt.GossipBind
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return fmt.Errorf("gossip address %q: %w", bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("gossip address %q: %w", bind, err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "coordinator"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = host, p, p
	mc.SecretKey = pb.GossipKey(c.opt.Secret)
	mc.Events = (*gossipEvents)(c)
	mc.Logger = slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)
	c.ml, err = memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("memberlist on %s: %w", bind, err)
	}
	return nil
}

type gossipEvents Cluster

func (g *gossipEvents) NotifyJoin(*memberlist.Node)   {}
func (g *gossipEvents) NotifyUpdate(*memberlist.Node) {}
func (g *gossipEvents) NotifyLeave(n *memberlist.Node) {
	c := (*Cluster)(g)
	c.mu.Lock()
	r := c.byName[n.Name]
	stopping := c.stopping
	c.mu.Unlock()
	if r != nil && !stopping {
		c.log.Warn("memberlist: worker failed or left", "worker", n.Name, "addr", n.Address())
		r.die(fmt.Errorf("memberlist reports %s failed or left", n.Name))
	}
}

func (c *Cluster) check(ctx context.Context, method string) error {
	if err := c.verifier.Verify(ctx); err != nil {
		from := "?"
		if p, ok := peer.FromContext(ctx); ok {
			from = p.Addr.String()
		}
		c.log.Warn("refused an unauthenticated call", "from", from, "method", method, "err", err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return nil
}

func (c *Cluster) auth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := c.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

func (c *Cluster) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := c.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Session is one worker's life in the cluster.
func (c *Cluster) Session(stream grpc.BidiStreamingServer[pb.FromWorker, pb.ToWorker]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil || hello.Name == "" {
		return status.Error(codes.InvalidArgument, "first message must be a Hello with a worker name")
	}
	addr := "?"
	if p, ok := peer.FromContext(stream.Context()); ok {
		addr = p.Addr.String()
	}
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return status.Error(codes.Unavailable, "coordinator is stopping")
	}
	if _, dup := c.byName[hello.Name]; dup {
		c.mu.Unlock()
		c.log.Warn("refused a worker: name in use", "worker", hello.Name, "from", addr)
		return status.Errorf(codes.AlreadyExists, "a worker named %q is already in the cluster (give --name)", hello.Name)
	}
	c.seq++
	r := &remote{name: hello.Name, seq: c.seq, addr: addr, stream: stream, kill: make(chan struct{}), ended: make(chan struct{})}
	c.byName[r.name] = r
	c.mu.Unlock()
	var cause error
	defer close(r.ended)
	defer func() {
		c.mu.Lock()
		if c.byName[r.name] == r {
			delete(c.byName, r.name)
		}
		c.mu.Unlock()
		select {
		case c.events <- event{r: r, dead: cause}:
		case <-c.quit:
		}
	}()
	if err := r.send(&pb.ToWorker{Body: &pb.ToWorker_Welcome{Welcome: &pb.Welcome{ConfigYaml: c.cfgYAML, GossipAddr: c.GossipAddr(), RingTimeoutMs: c.opt.RingTimeout.Milliseconds()}}}); err != nil {
		cause = err
		return err
	}
	c.log.Info("worker connected", "worker", r.name, "from", addr)
	if c.opt.OnConnect != nil {
		c.opt.OnConnect(r.name)
	}
	select {
	case c.joined <- struct{}{}:
	default:
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			ev := event{r: r, ready: m.GetReady(), report: m.GetReport()}
			if ev.ready == nil && ev.report == nil {
				continue
			}
			select {
			case c.events <- ev:
			case <-r.kill:
				return
			case <-c.closed:
				return
			}
		}
	}()
	select {
	case err := <-recvErr:
		cause = fmt.Errorf("session ended: %w", err)
	case <-r.kill:
		cause = r.why
	case <-stream.Context().Done():
		cause = fmt.Errorf("session ended: %w", stream.Context().Err())
	}
	c.mu.Lock()
	stopping := c.stopping
	c.mu.Unlock()
	if !stopping {
		c.log.Warn("worker lost", "worker", r.name, "cause", cause)
	}
	return status.Error(codes.Aborted, cause.Error())
}

// alive lists the connected workers in the order they joined.
func (c *Cluster) alive() []*remote {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rs []*remote
	for _, r := range c.byName {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *remote) int { return a.seq - b.seq })
	return rs
}

func names(rs []*remote) []string {
	var s []string
	for _, r := range rs {
		s = append(s, r.name)
	}
	return s
}

// Workers names the workers of the current ring, by rank.
func (c *Cluster) Workers() []string { return names(c.members) }

// needsForm: the ring failed, or a worker joined since it was formed.
func (c *Cluster) needsForm() bool {
	if c.dirty || len(c.members) == 0 {
		return true
	}
	al := c.alive()
	if len(al) != len(c.members) {
		return true
	}
	for i := range al {
		if al[i] != c.members[i] {
			return true
		}
	}
	return false
}

// form starts a new ring generation over the live workers, handing each the
// committed state (so a newcomer, or a survivor that applied an abandoned
// step, holds exactly what the coordinator committed).
func (c *Cluster) form(ctx context.Context, co *Coordinator) error {
	var waitStart time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		cands := c.alive()
		if len(cands) < c.opt.MinWorkers {
			if waitStart.IsZero() {
				waitStart = time.Now()
				c.log.Warn("waiting for workers", "have", len(cands), "min_workers", c.opt.MinWorkers, "up_to", c.opt.Wait, "step", co.step)
			}
			left := c.opt.Wait - time.Since(waitStart)
			if left <= 0 {
				return fmt.Errorf("%w: %d connected, min_workers=%d, waited %v (start more workers with tinct worker join --coordinator %s)", ErrTooFewWorkers, len(cands), c.opt.MinWorkers, c.opt.Wait, c.Addr())
			}
			t := time.NewTimer(left)
			select {
			case <-c.joined:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		c.gen++
		gen := c.gen
		st := co.state()
		params, bufs := pb.Floats(st.Params), pb.Floats(st.Buffers)
		m, v := pb.Floats(co.adam.M), pb.Floats(co.adam.V)
		for i, r := range cands {
			msg := &pb.ToWorker{Body: &pb.ToWorker_Setup{Setup: &pb.Setup{Generation: gen, Rank: int32(i), Size: int32(len(cands)),
				Params: params, Buffers: bufs, Tracked: st.Tracked, AdamM: m, AdamV: v, AdamStep: co.adam.Step,
				Lr: co.adam.LR, Beta1: co.adam.Beta1, Beta2: co.adam.Beta2, Eps: co.adam.Eps, Step: co.step}}}
			go func() {
				if err := r.send(msg); err != nil {
					r.die(fmt.Errorf("send setup: %w", err))
				}
			}()
		}
		addrs, ok := c.collectReady(ctx, gen, cands)
		if !ok {
			continue
		}
		c.members, c.addrs, c.dirty = cands, addrs, false
		co.gauges.workers.Set(float64(len(cands)))
		c.log.Info("ring formed", "generation", gen, "workers", names(cands), "step", co.step)
		return nil
	}
}

func (c *Cluster) collectReady(ctx context.Context, gen uint64, cands []*remote) ([]string, bool) {
	addrs := make([]string, len(cands))
	got := 0
	t := time.NewTimer(c.opt.SetupTimeout)
	defer t.Stop()
	for got < len(cands) {
		select {
		case <-ctx.Done():
			return nil, false
		case <-t.C:
			for i, r := range cands {
				if addrs[i] == "" {
					c.log.Warn("worker did not load the state in time: dropped", "worker", r.name, "timeout", c.opt.SetupTimeout)
					r.die(fmt.Errorf("no answer to setup within %v", c.opt.SetupTimeout))
				}
			}
			return nil, false
		case ev := <-c.events:
			i := slices.Index(cands, ev.r)
			if i < 0 {
				continue
			}
			if ev.dead != nil {
				return nil, false
			}
			if ev.ready != nil && ev.ready.Generation == gen && addrs[i] == "" {
				addrs[i] = ev.ready.RingAddr
				if addrs[i] == "" {
					addrs[i] = "-" // world size 1
				}
				got++
			}
		}
	}
	return addrs, true
}

// step runs one batch on the ring until every worker has applied it, and
// leaves the reduced gradient and buffers in co.grad and co.bufs.
func (c *Cluster) step(ctx context.Context, co *Coordinator, idx []int, tracked int64) (float64, map[string][]byte, error) {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		if attempt > maxAttempts {
			return 0, nil, fmt.Errorf("step %d failed %d times in a row; giving up", co.step, maxAttempts)
		}
		if c.needsForm() {
			if err := c.form(ctx, co); err != nil {
				return 0, nil, err
			}
		}
		n := len(c.members)
		shares := split(idx, n)
		gen := c.gen
		for i, r := range c.members {
			ind := make([]int32, len(shares[i]))
			for k, v := range shares[i] {
				ind[k] = int32(v)
			}
			msg := &pb.ToWorker{Body: &pb.ToWorker_Task{Task: &pb.Task{Generation: gen, Step: co.step, Epoch: int32(co.epoch), Indices: ind,
				Seed: co.cfg.Seed, Flip: co.cfg.Flip, Batch: int32(len(idx)), Tracked: tracked, NextAddr: c.addrs[(i+1)%n], SendUpdate: i == 0}}}
			go func() {
				if err := r.send(msg); err != nil {
					r.die(fmt.Errorf("send task: %w", err))
				}
			}()
		}
		reports := make([]*pb.Report, n)
		got := 0
		t := time.NewTimer(c.opt.StepTimeout)
	collect:
		for got < n {
			select {
			case <-ctx.Done():
				t.Stop()
				c.dirty = true // workers may have applied: reload them before the next step
				return 0, nil, ctx.Err()
			case <-t.C:
				for i, r := range c.members {
					if reports[i] == nil {
						c.log.Warn("worker stalled: no report within the step timeout; dropped", "worker", r.name, "step", co.step, "timeout", c.opt.StepTimeout)
						r.die(fmt.Errorf("no report of step %d within %v", co.step, c.opt.StepTimeout))
					}
				}
				c.dirty = true
				break collect
			case ev := <-c.events:
				i := slices.Index(c.members, ev.r)
				if i < 0 {
					continue
				}
				if ev.dead != nil {
					c.log.Warn("worker lost during step", "worker", ev.r.name, "step", co.step, "cause", ev.dead)
					c.dirty = true
					break collect
				}
				rep := ev.report
				if rep == nil || rep.Generation != gen || rep.Step != co.step || reports[i] != nil {
					continue
				}
				if rep.Error != "" {
					c.log.Warn("step failed on worker", "worker", ev.r.name, "step", co.step, "err", rep.Error)
					c.dirty = true
					break collect
				}
				reports[i] = rep
				got++
			}
		}
		t.Stop()
		if c.dirty {
			c.log.Warn("step abandoned (nothing applied); re-forming the ring and retrying", "step", co.step, "attempt", attempt)
			continue
		}
		up := reports[0].Update
		if len(up) != 4*(len(co.grad)+len(co.bufs)) {
			return 0, nil, fmt.Errorf("step %d: worker %s sent an update of %d bytes, want %d", co.step, c.members[0].name, len(up), 4*(len(co.grad)+len(co.bufs)))
		}
		_ = pb.Decode(co.grad, up[:4*len(co.grad)])
		_ = pb.Decode(co.bufs, up[4*len(co.grad):])
		loss, total := 0.0, 0
		sums := map[string][]byte{}
		c.lastReduce = 0
		for i, rep := range reports {
			loss += rep.Loss * float64(rep.Count)
			total += int(rep.Count)
			sums[c.members[i].name] = rep.Checksum
			c.lastReduce = max(c.lastReduce, rep.ReduceSeconds)
		}
		c.lastWorkers = len(reports)
		return loss / float64(max(total, 1)), sums, nil
	}
}

// clusterStep is trainStep on a cluster: the workers reduce and apply; the
// coordinator applies the same update to its copy and checks every replica.
func (c *Coordinator) clusterStep(ctx context.Context, idx []int) (float64, error) {
	tracked := c.net.BatchesTracked() + 1
	loss, sums, err := c.opt.Cluster.step(ctx, c, idx, tracked)
	if err != nil {
		return 0, err
	}
	// the slowest worker's wait for the ring after its backward finished
	c.gauges.reduceSeconds.Set(c.opt.Cluster.lastReduce)
	c.gauges.workers.Set(float64(c.opt.Cluster.lastWorkers))
	c.adam.Update(c.net.Params, c.grad)
	c.net.SetBuffers(c.bufs, tracked)
	c.rule.Update(c.ema, c.net)
	mine := worker.ChecksumOf(c.net)
	ns := make([]string, 0, len(sums))
	for n := range sums {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	for _, n := range ns {
		if !bytes.Equal(sums[n], mine) {
			return 0, fmt.Errorf("step %d: worker %s's replica differs from the coordinator's after the update (checksum %x, coordinator %x): stopping training", c.step, n, sums[n], mine)
		}
	}
	c.step++
	c.stepInEpoch++
	c.epochLoss += loss * float64(len(idx))
	c.epochCount += len(idx)
	return loss, nil
}

// Close tells every worker that training is over and stops the service and
// the gossip.
func (c *Cluster) Close(reason string) {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return
	}
	c.stopping = true
	close(c.quit)
	rs := make([]*remote, 0, len(c.byName))
	for _, r := range c.byName {
		rs = append(rs, r)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			// the worker ends the session when it has the Stop; a stalled
			// one is cut off after a grace period
			go func() { _ = r.send(&pb.ToWorker{Body: &pb.ToWorker_Stop{Stop: &pb.Stop{Reason: reason}}}) }()
			t := time.NewTimer(5 * time.Second)
			defer t.Stop()
			select {
			case <-r.ended:
			case <-t.C:
			}
			r.die(errors.New("coordinator stopped"))
			<-r.ended
		})
	}
	wg.Wait()
	close(c.closed)
	c.srv.Stop()
	_ = c.ml.Shutdown()
}
