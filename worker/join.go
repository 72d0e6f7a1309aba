package worker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

// ErrExcluded: the coordinator excluded this worker after repeated failures.
var ErrExcluded = errors.New("excluded by the coordinator")

// ErrCoordinatorFailed: the coordinator stopped training on an error.
var ErrCoordinatorFailed = errors.New("the coordinator stopped training on an error")

// JoinOptions are how a worker joins a cluster.
type JoinOptions struct {
	Coordinator string // the coordinator's gRPC address, host:port
	Name        string // unique in the cluster
	Secret      []byte // the cluster secret
	// Security is mutual TLS (cluster.LoadTLS) or plaintext, which is
	// refused unless every address involved is a loopback one.
	Security   *cluster.Security
	RingListen string // address of this worker's ring server ("127.0.0.1:0")
	GossipBind string // memberlist bind address (host:port, port 0 picks one); "" for 127.0.0.1:0
	// Advertise is the host the other nodes reach this worker's ring and
	// gossip at ("": the bind addresses' host, or this machine's address
	// when they bind 0.0.0.0).
	Advertise string
	// OnJoined, if set, is told when the worker joins (true) and leaves
	// (false) a coordinator's session: a readiness probe.
	OnJoined func(joined bool)
	// Wait is how long to keep trying to reach the coordinator — before the
	// first session, and after one ended without the coordinator saying
	// training is over — before giving up (default 5 min).
	Wait time.Duration
	// Open opens the training set the configuration names (the dataset path
	// must be reachable from the worker: an s3:// URL, fetched into the
	// worker's own cache, or a path on a shared filesystem).
	Open func(ctx context.Context, cfg *config.Config) (dataset.Examples, error)
	// Compute, if set, opens the backend each replica the worker makes
	// lives and computes on (a GPU: --gpu N); nil: as worker.New chooses.
	Compute func() (nn.Compute, error)
	Log     *slog.Logger
	// OnStep, if set, is called after each applied step (tests).
	OnStep func(w *Worker, step int64)
	// NoCompute makes the worker's replicas skip every step's work
	// (Worker.NoCompute: benchmarks of the protocol alone).
	NoCompute bool
}

// Join takes part in training until the coordinator says it is finished
// (nil), ctx ends (its error), or the worker cannot go on: the coordinator
// stopped on an error (ErrCoordinatorFailed), excluded this worker
// (ErrExcluded), refused its secret, or stayed unreachable for Wait. When a
// session ends otherwise — the coordinator dropped this worker, restarted,
// or the network broke — the worker joins again with a fresh state.
func Join(ctx context.Context, opt JoinOptions) error {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.RingListen == "" {
		opt.RingListen = "127.0.0.1:0"
	}
	if opt.GossipBind == "" {
		opt.GossipBind = "127.0.0.1:0"
	}
	if opt.Wait <= 0 {
		opt.Wait = 5 * time.Minute
	}
	if opt.Security == nil {
		return errors.New("worker: no transport security given (TLS, or plaintext on loopback)")
	}
	if err := opt.Security.Check(opt.Coordinator, opt.RingListen, opt.GossipBind); err != nil {
		return err
	}
	var inst [8]byte
	_, _ = rand.Read(inst[:])
	j := &joiner{opt: opt, log: opt.Log, instance: hex.EncodeToString(inst[:])}
	defer j.close()
	lastContact := time.Now()
	backoff := 250 * time.Millisecond
	waiting := false
	for {
		res := j.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if res.welcomed {
			lastContact, backoff, waiting = time.Now(), 250*time.Millisecond, false
		}
		switch res.outcome {
		case cluster.Outcome_FINISHED:
			j.log.Info("the coordinator finished training", "reason", res.reason)
			return nil
		case cluster.Outcome_EXCLUDED:
			return fmt.Errorf("%w: %s", ErrExcluded, res.reason)
		case cluster.Outcome_FAILED:
			if res.stopped {
				return fmt.Errorf("%w: %s", ErrCoordinatorFailed, res.reason)
			}
		case cluster.Outcome_DROPPED:
			j.log.Warn("the coordinator dropped this worker; joining again with a fresh state", "reason", res.reason)
		case cluster.Outcome_INTERRUPTED:
			j.log.Info("the coordinator was stopped (its checkpoint is saved); waiting for it to come back", "reason", res.reason, "up_to", opt.Wait)
			waiting = true
		}
		if res.err != nil {
			if permanent(res.err) {
				var pe *permanentError
				if !errors.As(res.err, &pe) {
					res.err = &permanentError{res.err}
				}
				return res.err
			}
			if !waiting {
				j.log.Warn("waiting for coordinator", "at", opt.Coordinator, "up_to", opt.Wait-time.Since(lastContact), "err", res.err)
				waiting = true
			} else {
				j.log.Debug("coordinator still unreachable", "at", opt.Coordinator, "err", res.err)
			}
		}
		if gone := time.Since(lastContact); gone > opt.Wait {
			return fmt.Errorf("coordinator %s unreachable for %v (--wait): %w", opt.Coordinator, gone.Round(time.Second), res.err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// permanent: errors that another try cannot mend.
func permanent(err error) bool {
	var pe *permanentError
	if errors.As(err, &pe) {
		return true
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition,
		codes.AlreadyExists: // another live worker has this --name (the coordinator waits for a dead one's session to end first)
		return true
	case codes.Unavailable:
		// a TLS handshake refused either way (another CA, a certificate
		// without the coordinator's name): waiting does not mend it
		msg := status.Convert(err).Message()
		return strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:")
	}
	return false
}

// Refused reports whether Join gave up because the coordinator (or this
// worker, comparing its dataset and network with the run's) refused it
// for a reason that another try cannot mend: TLS on one side only, a wrong
// secret, a foreign certificate, a duplicate name, another dataset or
// network. Such a worker should not be started again as it is.
func Refused(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// joiner keeps what outlives one session: the opened dataset and the
// replica (with its buffers), reused while the configuration allows.
type joiner struct {
	opt      JoinOptions
	instance string
	log      *slog.Logger
	dataKey  string
	data     dataset.Examples
	w        *Worker
	mc       model.Config
}

func (j *joiner) close() {
	if c, ok := j.data.(io.Closer); ok {
		c.Close()
	}
	if j.w != nil {
		j.w.Close() // its device
	}
}

// sessionResult is how one session ended.
type sessionResult struct {
	welcomed bool            // the coordinator accepted this worker
	stopped  bool            // the coordinator sent a Stop
	outcome  cluster.Outcome // with the Stop
	reason   string
	err      error // the session broke (or never started)
}

func (j *joiner) session(ctx context.Context) (res sessionResult) {
	opt := j.opt
	cc, err := grpc.NewClient(opt.Coordinator, grpc.WithTransportCredentials(opt.Security.Creds(nil)),
		// pings notice a coordinator that died with its host, or stalled
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		res.err = &permanentError{fmt.Errorf("coordinator address %s: %w", opt.Coordinator, err)}
		return res
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cluster.NewCoordinatorClient(cc).Session(ctx)
	if err == nil {
		var first *cluster.ToWorker
		if first, err = stream.Recv(); err == nil {
			return j.authenticated(ctx, stream, first)
		}
	}
	if mismatch := tlsMismatch(ctx, opt, err); mismatch != nil {
		res.err = mismatch
		return res
	}
	res.err = fmt.Errorf("coordinator %s: %w", opt.Coordinator, err)
	return res
}

// tlsMismatch explains a connection that broke before the coordinator said
// anything, when the reason will not change: a plaintext worker (that
// spoke HTTP/2 in the clear, which a TLS server drops without a word)
// against a coordinator that speaks TLS. The other way round, a TLS
// handshake with a plaintext coordinator, fails with a "tls:" error that
// permanent already recognises. nil: not a mismatch, or not known to be.
func tlsMismatch(ctx context.Context, opt JoinOptions, err error) error {
	if opt.Security.Encrypted() || status.Code(err) != codes.Unavailable {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, derr := (&net.Dialer{}).DialContext(ctx, "tcp", opt.Coordinator)
	if derr != nil {
		return nil // down or unreachable: transient
	}
	defer conn.Close()
	// only whether the server answers in TLS matters here, not who it is
	herr := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}).HandshakeContext(ctx)
	var alert tls.AlertError
	if herr != nil && !errors.As(herr, &alert) {
		return nil
	}
	return &permanentError{fmt.Errorf("coordinator %s speaks TLS, but this worker runs with --plaintext: give it --tls-dir with a certificate of the cluster's CA (tinct cluster certs): %w", opt.Coordinator, err)}
}

// authenticated goes on with a session whose first message arrived: the
// challenge, the Hello, the Welcome, then the session's work.
func (j *joiner) authenticated(ctx context.Context, stream grpc.BidiStreamingClient[cluster.FromWorker, cluster.ToWorker], first *cluster.ToWorker) (res sessionResult) {
	opt := j.opt
	var err error
	ch := first.GetChallenge()
	if ch == nil || len(ch.Nonce) != cluster.NonceLen {
		res.err = &permanentError{fmt.Errorf("coordinator %s: expected a challenge, got %T (is it a tinct coordinator of this version?)", opt.Coordinator, first.Body)}
		return res
	}
	auth := cluster.SessionAuth{Secret: opt.Secret, Method: cluster.Coordinator_Session_FullMethodName, Name: opt.Name, Instance: j.instance,
		Challenge: ch.Nonce, Nonce: cluster.Nonce(), Channel: cluster.Binding(stream.Context())}
	if err := stream.Send(&cluster.FromWorker{Body: &cluster.FromWorker_Hello{Hello: &cluster.Hello{Name: opt.Name, Instance: j.instance, Nonce: auth.Nonce, Mac: auth.WorkerMAC()}}}); err != nil {
		res.err = fmt.Errorf("coordinator %s: %w", opt.Coordinator, err)
		return res
	}
	if first, err = stream.Recv(); err != nil {
		if status.Code(err) == codes.Unauthenticated {
			err = fmt.Errorf("the coordinator refused this worker's credentials (is TINCT_CLUSTER_SECRET the same on both?): %w", err)
		}
		res.err = fmt.Errorf("coordinator %s: %w", opt.Coordinator, err)
		return res
	}
	if st := first.GetStop(); st != nil {
		return sessionResult{stopped: true, outcome: st.Outcome, reason: st.Reason}
	}
	wel := first.GetWelcome()
	if wel == nil {
		res.err = &permanentError{fmt.Errorf("coordinator %s: expected a welcome, got %T", opt.Coordinator, first.Body)}
		return res
	}
	if !auth.CheckProof(wel.Proof) {
		res.err = &permanentError{fmt.Errorf("%w: coordinator %s could not prove it knows the cluster secret (is TINCT_CLUSTER_SECRET the same on both?)", cluster.ErrAuth, opt.Coordinator)}
		return res
	}
	res.welcomed = true
	cfg, err := config.Parse(wel.ConfigYaml, nil)
	if err != nil {
		res.err = &permanentError{fmt.Errorf("configuration from the coordinator: %w", err)}
		return res
	}
	w, err := j.replica(ctx, cfg)
	if err != nil {
		res.err = &permanentError{err}
		return res
	}
	if wel.GossipAddr != "" {
		ml, err := joinGossip(opt, fmt.Sprintf("%s#%d", opt.Name, wel.Session), wel.GossipProfile, wel.GossipAddr, j.log)
		if err != nil {
			res.err = err
			return res
		}
		defer func() { _ = ml.Leave(time.Second); _ = ml.Shutdown() }()
	}
	j.log.Info("joined", "coordinator", opt.Coordinator, "name", opt.Name, "dataset", cfg.Dataset, "images", j.data.Len())
	if opt.OnJoined != nil {
		opt.OnJoined(true)
		defer opt.OnJoined(false)
	}
	m := &Member{W: w, RingListen: opt.RingListen, Advertise: opt.Advertise, Secret: opt.Secret, Security: opt.Security, Timeout: time.Duration(wel.RingTimeoutMs) * time.Millisecond, Log: j.log, OnStep: opt.OnStep}
	defer m.Close()
	stop, err := serve(ctx, m, stream, j.check)
	if stop != nil {
		res.stopped, res.outcome, res.reason = true, stop.Outcome, stop.Reason
		return res
	}
	res.err = err
	return res
}

// replica opens the dataset and makes the worker, reusing both when the
// configuration names the same ones as before.
func (j *joiner) replica(ctx context.Context, cfg *config.Config) (*Worker, error) {
	key := fmt.Sprintf("%s|%d", cfg.Dataset, cfg.ImageSize)
	if j.data == nil || j.dataKey != key {
		j.close()
		j.data, j.w = nil, nil
		data, err := j.opt.Open(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("dataset %s (the worker opens what the coordinator names: an s3:// dataset with this worker's TINCT_S3_*/AWS_* settings, or a path on a filesystem shared with the coordinator): %w", cfg.Dataset, err)
		}
		j.data, j.dataKey = data, key
	}
	mc := cfg.ModelConfig()
	if j.w == nil || fmt.Sprint(mc) != fmt.Sprint(j.mc) {
		open := j.opt.Compute
		if open == nil {
			open = nn.EnvDevice // as New chooses
		}
		be, err := open()
		if err != nil {
			return nil, fmt.Errorf("worker %s: %w", j.opt.Name, err)
		}
		w, err := NewOn(j.opt.Name, be, mc, j.data)
		if err != nil {
			return nil, err
		}
		w.NoCompute = j.opt.NoCompute
		if j.w != nil {
			j.w.Close()
		}
		j.w, j.mc = w, mc
	}
	return j.w, nil
}

// check refuses a Setup for another run than this worker can take part in:
// another training set (by content hash: a per-worker cache or storage
// that is not really shared), or another network (image size, widths,
// depth, parameters: another tinct version, most likely). Both are
// permanent; the message names what each side has.
func (j *joiner) check(s *cluster.Setup) error {
	var problems []string
	if s.DatasetHash != "" {
		id, ok := j.data.(dataset.Identified)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("the coordinator trains on %s (content hash %s), but this worker's training set has no manifest to compare", s.DatasetPath, s.DatasetHash))
		case id.Manifest().ContentHash() != s.DatasetHash:
			problems = append(problems, fmt.Sprintf("this worker's dataset is not the coordinator's: the coordinator trains on %s (content hash %s), this worker opened %s (content hash %s); give the worker the same prepared set (a filesystem that is really shared, or the s3:// URL), or prepare it again from the same photos with the same options",
				s.DatasetPath, s.DatasetHash, HostPath(id.Dir()), id.Manifest().ContentHash()))
		}
	}
	if s.Model != "" {
		if mine := j.mc.Describe(j.data.ImageSize(), j.w.net.NumParams()); mine != s.Model {
			problems = append(problems, fmt.Sprintf("this worker builds another network than the coordinator: the coordinator trains %s, this worker builds %s (the same tinct version on every node?)", s.Model, mine))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("worker %s refuses the run: %s", j.opt.Name, strings.Join(problems, "; "))
}

// hostPath is dir as this machine's host name and the folder.
func HostPath(dir string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "?"
	}
	return host + ":" + dir
}

func joinGossip(opt JoinOptions, name, profile, seed string, log *slog.Logger) (*memberlist.Memberlist, error) {
	ml, err := cluster.StartGossip(cluster.GossipOptions{Name: name, Bind: opt.GossipBind, Advertise: opt.Advertise, Secret: opt.Secret, Profile: profile, Log: log})
	if err != nil {
		return nil, err
	}
	if _, err := ml.Join([]string{seed}); err != nil {
		_ = ml.Shutdown()
		return nil, fmt.Errorf("memberlist join %s: %w", seed, err)
	}
	return ml, nil
}

// serve runs a session's messages until a Stop (returned) or an error.
// Tasks queue up and run one after another in a goroutine of their own, so
// that the next step starts as soon as one is reported, whatever the
// coordinator is doing; a Setup gives up the task running and those queued
// (they belong to a generation the coordinator abandoned). One goroutine
// sends every message, so a snapshot on its way does not hold up the next
// step.
//
// check vets each Setup before anything is computed; when it fails, the
// worker tells the coordinator why (Refuse) and the session ends with a
// permanent error.
func serve(ctx context.Context, m *Member, stream grpc.BidiStreamingClient[cluster.FromWorker, cluster.ToWorker], check func(*cluster.Setup) error) (*cluster.Stop, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan *cluster.ToWorker)
	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	out := make(chan *cluster.FromWorker, 64)
	sendErr := make(chan error, 1)
	refused := make(chan struct{}) // closed once a Refuse is sent
	go func() {
		for {
			select {
			case msg := <-out:
				if err := stream.Send(msg); err != nil {
					sendErr <- err
					return
				}
				if msg.GetRefuse() != nil {
					close(refused)
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	send := func(msg *cluster.FromWorker) {
		select {
		case out <- msg:
		case <-ctx.Done():
		}
	}
	q := newTaskQueue()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			t, tctx := q.pop(ctx)
			if t == nil {
				return
			}
			rep := m.Step(tctx, TaskOf(t), t.Tracked)
			q.finished()
			send(&cluster.FromWorker{Body: &cluster.FromWorker_Report{Report: ReportMsg(rep)}})
		}
	}()
	defer func() { q.close(); <-done }()
	for {
		var msg *cluster.ToWorker
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil, errors.New("the coordinator closed the session")
			}
			return nil, fmt.Errorf("session lost: %w", err)
		case err := <-sendErr:
			return nil, fmt.Errorf("session lost: %w", err)
		case msg = <-msgs:
		}
		switch b := msg.Body.(type) {
		case *cluster.ToWorker_Stop:
			q.close()
			return b.Stop, nil
		case *cluster.ToWorker_Setup:
			q.flush()
			s := b.Setup
			if err := check(s); err != nil {
				send(&cluster.FromWorker{Body: &cluster.FromWorker_Refuse{Refuse: &cluster.Refuse{Reason: err.Error()}}})
				t := time.NewTimer(5 * time.Second) // for the coordinator to hear why
				select {
				case <-refused:
				case <-sendErr:
				case <-t.C:
				}
				t.Stop()
				return nil, &permanentError{err}
			}
			st, err := decodeSetup(m.W, s)
			if err != nil {
				return nil, &permanentError{err}
			}
			addr, err := m.Setup(s.Generation, int(s.Rank), int(s.Size), st)
			if err != nil {
				return nil, err
			}
			m.Log.Info("ring generation", "generation", s.Generation, "rank", s.Rank, "size", s.Size, "step", s.Step, "addr", addr)
			send(&cluster.FromWorker{Body: &cluster.FromWorker_Ready{Ready: &cluster.Ready{Generation: s.Generation, RingAddr: addr}}})
		case *cluster.ToWorker_Task:
			q.push(b.Task)
		}
	}
}

// taskQueue holds a session's tasks in order; one goroutine runs them.
type taskQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	tasks   []*cluster.Task
	running bool
	cancel  context.CancelFunc // of the task running
	closed  bool
}

func newTaskQueue() *taskQueue {
	q := &taskQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *taskQueue) push(t *cluster.Task) {
	q.mu.Lock()
	q.tasks = append(q.tasks, t)
	q.cond.Broadcast()
	q.mu.Unlock()
}

// pop waits for the next task and marks it running (nil: closed).
func (q *taskQueue) pop(ctx context.Context) (*cluster.Task, context.Context) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.tasks) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return nil, nil
	}
	t := q.tasks[0]
	q.tasks = q.tasks[1:]
	tctx, cancel := context.WithCancel(ctx)
	q.running, q.cancel = true, cancel
	return t, tctx
}

// finished: the task popped last is over.
func (q *taskQueue) finished() {
	q.mu.Lock()
	q.cancel()
	q.running = false
	q.cond.Broadcast()
	q.mu.Unlock()
}

// flush drops the queued tasks, cancels the one running and waits for it.
func (q *taskQueue) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.tasks = nil
	if q.running {
		q.cancel()
	}
	for q.running {
		q.cond.Wait()
	}
}

// close is flush, and pop returns nil from now on.
func (q *taskQueue) close() {
	q.flush()
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

func decodeSetup(w *Worker, s *cluster.Setup) (trainstate.Replica, error) {
	st, err := trainstate.DecodeReplica(s.State, w.net.NumParams(), w.net.NumBuffers(), s.Lr, s.Beta1, s.Beta2, s.Eps,
		model.EMA{Decay: s.EmaDecay, CopyBuffers: s.EmaCopyBuffers})
	if err != nil {
		return st, fmt.Errorf("state from the coordinator does not fit this worker's network: %w", err)
	}
	return st, nil
}

// TaskOf is a Task message as the core's task.
func TaskOf(t *cluster.Task) *control.Task {
	idx := make([]int, len(t.Indices))
	for i, v := range t.Indices {
		idx[i] = int(v)
	}
	return &control.Task{Gen: t.Generation, Step: t.Step, Epoch: int(t.Epoch), Indices: idx, Batch: int(t.Batch), Seed: t.Seed, Flip: t.Flip, Next: t.NextAddr, Snapshot: t.Snapshot, SendState: t.SendState}
}

// ReportMsg is a report as its message.
func ReportMsg(r *control.Report) *cluster.Report {
	m := &cluster.Report{Generation: r.Gen, Step: r.Step, Loss: r.Loss, Count: int32(r.Count), Checksum: r.Checksum, Error: r.Err, ReduceSeconds: r.RingSeconds, RingFault: r.RingFault}
	if r.State != nil {
		m.State = trainstate.EncodeReplica(r.State.(trainstate.Replica))
	}
	return m
}
