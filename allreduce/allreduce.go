// Package allreduce sums float32 vectors across the ranks of a training
// cluster with a ring all-reduce over gRPC bidirectional streams.
//
// Every rank runs a [Ring]: [Listen] starts its gRPC server, [Ring.Connect]
// opens one long-lived stream to the next rank ((rank+1)%size), and
// [Ring.AllReduce] replaces a vector, in place, by the element-wise sum of
// that vector over all ranks. The algorithm is the bandwidth-optimal ring:
// a reduce-scatter of size−1 phases followed by an all-gather of size−1
// phases, each phase moving one of size segments to the next rank. Segments
// are split into chunks that are streamed and pipelined: a rank forwards
// chunk k of a phase as soon as it has added it, while chunk k+1 is still on
// the wire, so the network and the arithmetic overlap.
//
// # Determinism
//
// Each segment is summed once, in a fixed order (starting at the rank with
// the segment's index and going round the ring), and the all-gather copies
// the finished bytes from the rank that completed it. So every rank ends
// with bitwise identical results, and the result depends only on the data,
// the world size and the lengths of the vectors passed — not on timing, and
// not on the chunk size (chunking never changes the order of an addition).
// Reducing a vector in several sub-slice calls gives sums that may differ in
// the last bit from one call over the whole vector (the segment boundaries
// move), but the ranks still agree bitwise.
//
// # Averaging
//
// AllReduce sums. [Ring.Average] sums and then divides by the world size on
// every rank (the same division of the same bytes, so ranks still agree).
//
// # Buckets
//
// The caller passes one flat vector (the model keeps all gradients in one
// []float32). To overlap the reduction with backward, call AllReduce on
// sub-slices as they become final — from one goroutine, in the same order
// with the same boundaries on every rank, all with the same step — or use
// [Ring.Overlap], which does that for tails announced by
// model.UNet.BackwardNotify.
//
// # Faults
//
// Every AllReduce has a deadline (Config.Timeout, plus the caller's
// context): a dead or stalled neighbour makes it return an error wrapping
// context.DeadlineExceeded, never hang. A neighbour that closes, a chunk for
// another step ([ErrStep]), or any other protocol error also fails the call.
// After any failed call the Ring is broken ([ErrBroken]): it closes its
// streams, so its neighbours fail promptly too, and every later call fails.
// The coordinator abandons the step and re-forms the ring with new Rings.
//
// # Authentication
//
// Ranks share a cluster secret. Each stream opens with a challenge–response
// handshake (see allreduce.proto): the server sends a fresh random nonce,
// the client answers with its own nonce and an HMAC-SHA256 of both nonces
// and the ring geometry under the secret, and the server answers with its
// own HMAC, which the client checks before it sends any data. A peer without
// the secret is refused ([ErrAuth]) and the refusal is logged. The handshake
// proves knowledge of the secret; it does not encrypt or sign the data that
// follows, so run the ring on a private network (there is no TLS option
// yet) where nobody can inject into its TCP connections.
//
// # Wire
//
// One gRPC bidirectional stream per ring edge (service Ring, method Pass in
// allreduce.proto). Each chunk message carries the step, the phase, the
// chunk's offset, the vector's length and the floats as raw little-endian
// float32 in a bytes field. A codec of this package encodes and decodes
// chunks itself (the bytes on the wire are plain protobuf) so the floats
// are copied once into the send buffer and added straight from the receive
// buffers.
package allreduce

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative allreduce.proto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	// DefaultChunkBytes is the pipeline chunk used when Config.ChunkBytes is 0.
	DefaultChunkBytes = 256 << 10
	// MaxChunkBytes bounds Config.ChunkBytes (and so the gRPC message size).
	MaxChunkBytes = 16 << 20
	// DefaultTimeout is the per-operation deadline used when Config.Timeout is 0.
	DefaultTimeout = 60 * time.Second
	// flow-control window of every stream and connection: a few chunks in
	// flight per neighbour, so a sender never waits on window updates.
	minWindow = 8 << 20
	// gRPC's read and write buffers (32, 64, 256 KiB and 1 MiB measured alike).
	ioBuffer = 256 << 10
)

// buffers backs every Ring's gRPC transport and codec.
var buffers = &bufferPool{}

var (
	// ErrAuth: a peer failed the shared-secret handshake (either side).
	ErrAuth = errors.New("allreduce: authentication failed")
	// ErrStep: a chunk arrived for another step than the one being reduced.
	ErrStep = errors.New("allreduce: chunk for another step")
	// ErrBroken: the ring failed earlier (or was closed) and cannot be used.
	ErrBroken = errors.New("allreduce: ring is broken")
)

// Config describes one rank's member of a ring.
type Config struct {
	// Rank of this member in 0..Size-1, and the world size. Rank r sends to
	// (r+1)%Size and receives from (r-1+Size)%Size.
	Rank, Size int
	// Listen is the address of this rank's gRPC server, e.g. "127.0.0.1:0"
	// (":0" picks a free port; Ring.Addr reports the bound address).
	Listen string
	// Secret is the shared cluster secret; required when Size > 1.
	Secret []byte
	// ChunkBytes is the pipeline chunk size; 0 means DefaultChunkBytes. It is
	// rounded down to a multiple of 4 and must be the same on every rank
	// (the handshake checks).
	ChunkBytes int
	// Timeout is the deadline of each AllReduce and of Connect; 0 means
	// DefaultTimeout, a negative value means none (only the context's).
	Timeout time.Duration
	// Logger receives refusals and failures; nil means slog.Default().
	Logger *slog.Logger
	// Generation names this ring among the ones a cluster forms over time;
	// the handshake refuses a peer of another generation.
	Generation uint64
	// Creds protect the ring's connections (mutual TLS in a cluster); nil
	// means plaintext.
	Creds credentials.TransportCredentials
	// Wrap, if set, wraps the server's listener (to report junk on it).
	Wrap func(net.Listener) net.Listener
}

// Ring is one rank's member of a ring all-reduce. AllReduce, Average and
// Overlap must be called from one goroutine at a time; Close may be called
// from any goroutine.
type Ring struct {
	cfg        Config
	log        *slog.Logger
	chunkElems int
	window     int32

	lis net.Listener
	srv *grpc.Server

	// inbox carries chunks (or the error that ended the stream) from the
	// previous rank's stream, in order.
	inbox chan *rxChunk
	// dead is closed when the ring breaks or is closed; broken says why.
	dead chan struct{}

	mu       sync.Mutex
	broken   error
	closed   bool
	inbound  bool      // a previous rank has connected
	out      *outbound // the stream to the next rank
	handlers sync.WaitGroup

	op sync.Mutex // held during AllReduce; TryLock rejects concurrent calls
}

type outbound struct {
	addr   string
	cc     *grpc.ClientConn
	stream grpc.BidiStreamingClient[Frame, Frame]
	cancel context.CancelFunc
}

// Listen validates cfg and, when cfg.Size > 1, starts this rank's gRPC
// server on cfg.Listen. With Size 1 nothing listens: Addr is "" and Connect,
// AllReduce and Average return at once.
func Listen(cfg Config) (*Ring, error) {
	if cfg.Size < 1 {
		return nil, fmt.Errorf("allreduce: world size %d: must be at least 1", cfg.Size)
	}
	if cfg.Rank < 0 || cfg.Rank >= cfg.Size {
		return nil, fmt.Errorf("allreduce: rank %d out of range for world size %d (want 0..%d)", cfg.Rank, cfg.Size, cfg.Size-1)
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	cfg.ChunkBytes &^= 3
	if cfg.ChunkBytes < 4 || cfg.ChunkBytes > MaxChunkBytes {
		return nil, fmt.Errorf("allreduce: chunk size %d bytes: must be between 4 and %d", cfg.ChunkBytes, MaxChunkBytes)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	r := &Ring{
		cfg:        cfg,
		log:        cfg.Logger,
		chunkElems: cfg.ChunkBytes / 4,
		window:     int32(max(minWindow, 4*cfg.ChunkBytes)),
		inbox:      make(chan *rxChunk, 8),
		dead:       make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if cfg.Size == 1 {
		return r, nil
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("allreduce: Config.Secret is empty: set the cluster secret shared by all ranks")
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("allreduce: rank %d: listen on %q: %w", cfg.Rank, cfg.Listen, err)
	}
	r.lis = lis
	if cfg.Wrap != nil {
		lis = cfg.Wrap(lis)
	}
	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	r.srv = grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(cfg.ChunkBytes+4096),
		grpc.StaticStreamWindowSize(r.window),
		grpc.StaticConnWindowSize(r.window),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
		grpc.WaitForHandlers(true),
		grpc.ForceServerCodecV2(codec{pool: buffers}),
		experimental.BufferPool(buffers),
	)
	RegisterRingServer(r.srv, (*ringServer)(r))
	go func() {
		if err := r.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			r.fail(fmt.Errorf("allreduce: rank %d: server on %s: %w", cfg.Rank, lis.Addr(), err))
		}
	}()
	return r, nil
}

// Addr is the address this rank's server is bound to ("" for world size 1).
func (r *Ring) Addr() string {
	if r.lis == nil {
		return ""
	}
	return r.lis.Addr().String()
}

// Rank and Size report the ring geometry.
func (r *Ring) Rank() int { return r.cfg.Rank }

// Size is the world size.
func (r *Ring) Size() int { return r.cfg.Size }

func (r *Ring) next() int { return (r.cfg.Rank + 1) % r.cfg.Size }
func (r *Ring) prev() int { return (r.cfg.Rank - 1 + r.cfg.Size) % r.cfg.Size }

// Err reports why the ring is unusable, or nil while it is healthy.
func (r *Ring) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broken
}

// fail breaks the ring with cause (the first cause wins): it cancels the
// stream to the next rank and ends the stream from the previous rank, so
// both neighbours notice at once.
func (r *Ring) fail(cause error) {
	r.mu.Lock()
	if r.broken != nil {
		r.mu.Unlock()
		return
	}
	r.broken = cause
	close(r.dead)
	out := r.out
	r.mu.Unlock()
	if out != nil {
		out.cancel()
	}
}

// brokenErr is the error a call returns on a broken ring.
func (r *Ring) brokenErr() error {
	cause := r.Err()
	if errors.Is(cause, ErrBroken) {
		return cause
	}
	return fmt.Errorf("%w (%w); build a new Ring to re-form it", ErrBroken, cause)
}

// Close stops the server and the streams. A concurrent AllReduce fails.
// Close is idempotent.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.fail(fmt.Errorf("%w: rank %d was closed", ErrBroken, r.cfg.Rank))
	r.mu.Lock()
	out := r.out
	r.mu.Unlock()
	if out != nil {
		_ = out.cc.Close()
	}
	if r.srv != nil {
		r.srv.Stop() // closes the listener and connections, waits for handlers
	}
	r.handlers.Wait()
	return nil
}

// Connect dials the next rank, (Rank+1)%Size, at address next and
// authenticates both ways. It waits (up to Config.Timeout and ctx) for the
// next rank to start listening. It is called once per Ring; with world
// size 1 it does nothing.
func (r *Ring) Connect(ctx context.Context, next string) (err error) {
	if r.cfg.Size == 1 {
		return nil
	}
	r.mu.Lock()
	switch {
	case r.broken != nil:
		r.mu.Unlock()
		return r.brokenErr()
	case r.out != nil:
		r.mu.Unlock()
		return fmt.Errorf("allreduce: rank %d is already connected to %s", r.cfg.Rank, r.out.addr)
	}
	r.mu.Unlock()

	ctx, cancelCtx := r.withTimeout(ctx)
	defer cancelCtx()
	creds := r.cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient(next,
		grpc.WithTransportCredentials(creds),
		grpc.WithStaticStreamWindowSize(r.window),
		grpc.WithStaticConnWindowSize(r.window),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{pool: buffers})),
		experimental.WithBufferPool(buffers),
	)
	if err != nil {
		return fmt.Errorf("allreduce: rank %d: dial next rank %d at %q: %w", r.cfg.Rank, r.next(), next, err)
	}
	// The stream outlives ctx; ctx only bounds the handshake.
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	defer func() {
		if err != nil {
			cancel()
			_ = cc.Close()
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w: %w", err, ctx.Err())
			}
		}
	}()
	where := fmt.Sprintf("rank %d: connect to next rank %d at %s", r.cfg.Rank, r.next(), next)
	stream, err := NewRingClient(cc).Pass(sctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("allreduce: %s: %w", where, err)
	}
	if err := r.clientHandshake(stream, next); err != nil {
		return err
	}
	if !stop() {
		return fmt.Errorf("allreduce: %s: %w", where, ctx.Err())
	}
	out := &outbound{addr: next, cc: cc, stream: stream, cancel: cancel}
	r.mu.Lock()
	switch {
	case r.broken != nil:
		r.mu.Unlock()
		return r.brokenErr()
	case r.out != nil:
		r.mu.Unlock()
		return fmt.Errorf("allreduce: rank %d is already connected to %s", r.cfg.Rank, r.out.addr)
	}
	r.out = out
	r.mu.Unlock()
	// The server sends nothing after the handshake; a Recv that returns
	// means the next rank ended the stream (closed, refused, or broke).
	go func() {
		_, err := stream.Recv()
		if err == nil {
			err = errors.New("unexpected message after the handshake")
		}
		r.fail(fmt.Errorf("allreduce: rank %d: stream to next rank %d at %s ended: %w", r.cfg.Rank, r.next(), next, describe(err)))
	}()
	return nil
}

// describe makes gRPC status errors readable while keeping what matters
// for errors.Is (context cancellation and deadlines).
func describe(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.DeadlineExceeded:
		if s.Message() == context.DeadlineExceeded.Error() {
			return context.DeadlineExceeded
		}
		return fmt.Errorf("%s: %w", s.Message(), context.DeadlineExceeded)
	case codes.Canceled:
		if s.Message() == context.Canceled.Error() {
			return context.Canceled
		}
		return fmt.Errorf("%s: %w", s.Message(), context.Canceled)
	case codes.Unauthenticated:
		return fmt.Errorf("%w: %s", ErrAuth, s.Message())
	case codes.Unavailable:
		return fmt.Errorf("peer unavailable (closed or unreachable): %s", s.Message())
	}
	return fmt.Errorf("%s: %s", s.Code(), s.Message())
}

func (r *Ring) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.cfg.Timeout > 0 {
		return context.WithTimeout(ctx, r.cfg.Timeout)
	}
	return context.WithCancel(ctx)
}

// ringServer is the gRPC face of a Ring.
type ringServer Ring

func (s *ringServer) mustEmbedUnimplementedRingServer() {}

// Pass receives the previous rank's stream: handshake, then chunks into the inbox.
func (s *ringServer) Pass(stream grpc.BidiStreamingServer[Frame, Frame]) error {
	r := (*Ring)(s)
	r.mu.Lock()
	if r.broken != nil {
		r.mu.Unlock()
		return status.Error(codes.Unavailable, fmt.Sprintf("rank %d: ring is broken", r.cfg.Rank))
	}
	r.handlers.Add(1)
	r.mu.Unlock()
	defer r.handlers.Done()

	from := "unknown peer"
	if p, ok := peer.FromContext(stream.Context()); ok {
		from = p.Addr.String()
	}
	if err := r.serverHandshake(stream, from); err != nil {
		return err
	}
	for {
		c := new(rxChunk)
		if err := stream.RecvMsg(c); err != nil {
			r.fail(fmt.Errorf("allreduce: rank %d: stream from previous rank %d (%s) ended: %w", r.cfg.Rank, r.prev(), from, describeRecv(err)))
			return nil
		}
		if c.hello != nil {
			err := fmt.Errorf("allreduce: rank %d: previous rank %d (%s) sent a frame that is not a chunk", r.cfg.Rank, r.prev(), from)
			r.fail(err)
			return status.Error(codes.InvalidArgument, err.Error())
		}
		select {
		case r.inbox <- c:
		case <-r.dead:
			return status.Error(codes.Aborted, fmt.Sprintf("rank %d: %v", r.cfg.Rank, r.Err()))
		}
	}
}

// describeRecv explains why the previous rank's stream ended.
func describeRecv(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("it closed the stream")
	}
	if status.Code(err) == codes.Canceled {
		// the peer cancelled; not this process's context
		return errors.New("it cancelled the stream (closed, or failed on its side)")
	}
	return describe(err)
}
