package worker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/tinct/tinct/allreduce"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/coordinator/clusterpb"
	"github.com/tinct/tinct/model"
)

// ChecksumOf is the SHA-256 of a network's weights, BatchNorm buffers and
// batch count: replicas that agree bitwise have equal checksums.
func ChecksumOf(net *model.UNet) []byte {
	h := sha256.New()
	h.Write(clusterpb.Floats(net.Params, net.Buffers(nil)))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(net.BatchesTracked()))
	h.Write(b[:])
	return h.Sum(nil)
}

// Checksum is ChecksumOf the replica.
func (w *Worker) Checksum() []byte { return ChecksumOf(w.net) }

// ErrFinished is returned by Join when the coordinator ended training.
var ErrFinished = errors.New("training finished")

// JoinOptions are how a worker joins a cluster.
type JoinOptions struct {
	Coordinator string // the coordinator's gRPC address, host:port
	Name        string // unique in the cluster
	Secret      []byte // the cluster secret
	RingListen  string // address of this worker's ring server ("127.0.0.1:0")
	GossipBind  string // memberlist bind address (host:port, port 0 picks one); "" for 127.0.0.1:0
	// Open opens the training set the configuration names (the dataset path
	// must be reachable from the worker: an s3:// URL, fetched into the
	// worker's own cache, or a path on a shared filesystem).
	Open func(ctx context.Context, cfg *config.Config) (Source, error)
	Log  *slog.Logger
	// OnStep, if set, is called after each applied step (tests).
	OnStep func(w *Worker, step int64)
}

// Join connects to a coordinator, takes part in training until the
// coordinator stops it (ErrFinished), ctx ends, or the coordinator is lost.
func Join(ctx context.Context, opt JoinOptions) error {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if opt.RingListen == "" {
		opt.RingListen = "127.0.0.1:0"
	}
	cc, err := grpc.NewClient(opt.Coordinator, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(clusterpb.Creds{Secret: opt.Secret}),
		// pings notice a coordinator that died with its host, or stalled
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", opt.Coordinator, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := clusterpb.NewCoordinatorClient(cc).Session(ctx)
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", opt.Coordinator, err)
	}
	if err := stream.Send(&clusterpb.FromWorker{Body: &clusterpb.FromWorker_Hello{Hello: &clusterpb.Hello{Name: opt.Name}}}); err != nil {
		return fmt.Errorf("coordinator %s: %w", opt.Coordinator, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("coordinator %s refused or unreachable: %w", opt.Coordinator, err)
	}
	wel := first.GetWelcome()
	if wel == nil {
		return fmt.Errorf("coordinator %s: expected a welcome, got %T", opt.Coordinator, first.Body)
	}
	cfg, err := loadConfig(wel.ConfigYaml)
	if err != nil {
		return fmt.Errorf("configuration from the coordinator: %w", err)
	}
	data, err := opt.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("dataset %s (the worker opens what the coordinator names: an s3:// dataset with this worker's TINCT_S3_*/AWS_* settings, or a path on a filesystem shared with the coordinator): %w", cfg.Dataset, err)
	}
	if c, ok := data.(io.Closer); ok {
		defer c.Close()
	}
	if wel.GossipAddr != "" {
		ml, err := joinGossip(opt, wel.GossipAddr, log)
		if err != nil {
			return err
		}
		defer func() { _ = ml.Leave(time.Second); _ = ml.Shutdown() }()
	}
	mc := model.DefaultConfig()
	mc.Widths, mc.BlockDepth = cfg.Model.Widths, cfg.Model.BlockDepth
	w, err := New(opt.Name, mc, data)
	if err != nil {
		return err
	}
	log.Info("joined", "coordinator", opt.Coordinator, "name", opt.Name, "dataset", cfg.Dataset, "images", data.Len())
	m := &member{w: w, opt: opt, log: log, stream: stream, timeout: time.Duration(wel.RingTimeoutMs) * time.Millisecond}
	defer m.closeRing()
	return m.loop(ctx)
}

func loadConfig(y []byte) (*config.Config, error) {
	dir, err := os.MkdirTemp("", "tinct-worker-config")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(f, y, 0o600); err != nil {
		return nil, err
	}
	return config.Load(f, nil)
}

func joinGossip(opt JoinOptions, seed string, log *slog.Logger) (*memberlist.Memberlist, error) {
	bind := opt.GossipBind
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", bind, err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = opt.Name
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = host, p, p
	mc.SecretKey = clusterpb.GossipKey(opt.Secret)
	mc.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("memberlist on %s: %w", bind, err)
	}
	if _, err := ml.Join([]string{seed}); err != nil {
		_ = ml.Shutdown()
		return nil, fmt.Errorf("memberlist join %s: %w", seed, err)
	}
	return ml, nil
}

// member is a worker's side of a session.
type member struct {
	w       *Worker
	opt     JoinOptions
	log     *slog.Logger
	stream  grpc.BidiStreamingClient[clusterpb.FromWorker, clusterpb.ToWorker]
	timeout time.Duration

	gen        uint64
	rank, size int
	ring       *allreduce.Ring
	connected  bool
	vec        []float32
}

func (m *member) closeRing() {
	if m.ring != nil {
		_ = m.ring.Close()
		m.ring = nil
	}
}

func (m *member) send(msg *clusterpb.FromWorker) error {
	return m.stream.Send(msg)
}

func (m *member) loop(ctx context.Context) error {
	msgs := make(chan *clusterpb.ToWorker)
	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := m.stream.Recv()
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
	var (
		taskCancel context.CancelFunc = func() {}
		taskDone   chan struct{}
	)
	waitTask := func() {
		taskCancel()
		if taskDone != nil {
			<-taskDone
			taskDone = nil
		}
	}
	defer waitTask()
	for {
		var msg *clusterpb.ToWorker
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("coordinator %s closed the session", m.opt.Coordinator)
			}
			return fmt.Errorf("coordinator %s lost: %w (restart it with resume=true, then join again)", m.opt.Coordinator, err)
		case msg = <-msgs:
		}
		switch b := msg.Body.(type) {
		case *clusterpb.ToWorker_Stop:
			waitTask()
			m.log.Info("coordinator stopped training", "reason", b.Stop.Reason)
			return ErrFinished
		case *clusterpb.ToWorker_Setup:
			waitTask()
			if err := m.setup(b.Setup); err != nil {
				return err
			}
		case *clusterpb.ToWorker_Task:
			waitTask()
			tctx, cancel := context.WithCancel(ctx)
			taskCancel = cancel
			done := make(chan struct{})
			taskDone = done
			go func(t *clusterpb.Task) {
				defer close(done)
				rep := m.step(tctx, t)
				if err := m.send(&clusterpb.FromWorker{Body: &clusterpb.FromWorker_Report{Report: rep}}); err != nil {
					m.log.Warn("report", "err", err)
				}
			}(b.Task)
		}
	}
}

func (m *member) setup(s *clusterpb.Setup) error {
	m.closeRing()
	w := m.w
	st := &State{Params: make([]float32, len(w.net.Params)), Buffers: make([]float32, w.net.NumBuffers()), Tracked: s.Tracked,
		Opt: &model.Adam{LR: s.Lr, Beta1: s.Beta1, Beta2: s.Beta2, Eps: s.Eps, Step: s.AdamStep, M: make([]float32, len(w.net.Params)), V: make([]float32, len(w.net.Params))}}
	if err := errors.Join(clusterpb.Decode(st.Params, s.Params), clusterpb.Decode(st.Buffers, s.Buffers),
		clusterpb.Decode(st.Opt.M, s.AdamM), clusterpb.Decode(st.Opt.V, s.AdamV)); err != nil {
		return fmt.Errorf("state from the coordinator does not fit this worker's network: %w", err)
	}
	if err := w.Load(st); err != nil {
		return err
	}
	ring, err := allreduce.Listen(allreduce.Config{Rank: int(s.Rank), Size: int(s.Size), Listen: m.opt.RingListen, Secret: m.opt.Secret, Timeout: m.timeout, Logger: m.log})
	if err != nil {
		return err
	}
	m.ring, m.gen, m.rank, m.size, m.connected = ring, s.Generation, int(s.Rank), int(s.Size), false
	m.log.Info("ring generation", "generation", s.Generation, "rank", s.Rank, "size", s.Size, "step", s.Step, "addr", ring.Addr())
	return m.send(&clusterpb.FromWorker{Body: &clusterpb.FromWorker_Ready{Ready: &clusterpb.Ready{Generation: s.Generation, RingAddr: ring.Addr()}}})
}

// step computes the share, all-reduces the weighted gradient and buffers,
// applies the update and reports.
// overlapBucket is the smallest gradient tail (floats) reduced on its own
// while backward runs: 1 MiB, about 8% of the U-Net's gradient.
const overlapBucket = 1 << 18

func (m *member) step(ctx context.Context, t *clusterpb.Task) *clusterpb.Report {
	rep := &clusterpb.Report{Generation: t.Generation, Step: t.Step}
	fail := func(err error) *clusterpb.Report {
		rep.Error = err.Error()
		m.log.Warn("step failed", "step", t.Step, "generation", t.Generation, "err", err)
		return rep
	}
	if t.Generation != m.gen || m.ring == nil {
		return fail(fmt.Errorf("task of generation %d, worker is at %d", t.Generation, m.gen))
	}
	if !m.connected {
		if err := m.ring.Connect(ctx, t.NextAddr); err != nil {
			return fail(err)
		}
		m.connected = true
	}
	idx := make([]int, len(t.Indices))
	for i, v := range t.Indices {
		idx[i] = int(v)
	}
	task := Task{Step: t.Step, Epoch: int(t.Epoch), Indices: idx, Seed: t.Seed, Flip: t.Flip}
	var res Result
	var err error
	if m.size == 1 {
		if res, err = m.w.Compute(ctx, task); err != nil {
			return fail(err)
		}
		m.vec = append(append(m.vec[:0], res.Grads...), res.Buffers...)
	} else {
		// Each share's gradient is weighted by its part of the batch and
		// summed around the ring bucket by bucket while backward is still
		// producing the rest (DDP-style overlap); the BatchNorm buffers,
		// known after the forward pass, follow in one more call.
		wt := float32(len(idx)) / float32(t.Batch)
		o := m.ring.Overlap(ctx, t.Step, m.w.Grads(), overlapBucket)
		res, err = m.w.ComputeScaled(ctx, task, wt, o.Ready)
		waitStart := time.Now()
		if werr := o.Wait(); err == nil {
			err = werr
		}
		if err != nil {
			return fail(err)
		}
		m.vec = append(append(m.vec[:0], res.Grads...), res.Buffers...)
		bufs := m.vec[len(res.Grads):]
		for i := range bufs {
			bufs[i] *= wt
		}
		if err := m.ring.AllReduce(ctx, t.Step, bufs); err != nil {
			return fail(err)
		}
		rep.ReduceSeconds = time.Since(waitStart).Seconds()
	}
	np := len(res.Grads)
	m.w.Apply(m.vec[:np], m.vec[np:], t.Tracked)
	rep.Loss, rep.Count, rep.Checksum = res.Loss, int32(res.Count), m.w.Checksum()
	if t.SendUpdate {
		rep.Update = clusterpb.Floats(m.vec)
	}
	if m.opt.OnStep != nil {
		m.opt.OnStep(m.w, t.Step)
	}
	return rep
}
