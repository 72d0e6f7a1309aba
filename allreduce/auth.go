package allreduce

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tinct/tinct/internal/tlsbind"
)

const nonceLen = 32

// geometry is what a rank says of itself in the handshake.
type geometry struct {
	rank, size, chunk int32
	gen               uint64
}

func (g geometry) String() string {
	return fmt.Sprintf("rank %d of %d (chunk %d bytes, generation %d)", g.rank, g.size, g.chunk, g.gen)
}

func helloGeometry(h *Hello) geometry {
	return geometry{rank: h.Rank, size: h.Size, chunk: h.ChunkBytes, gen: h.Generation}
}

// mac is HMAC-SHA256(secret, label ‖ 0 ‖ first ‖ second ‖ rank ‖ size ‖
// chunk ‖ generation ‖ channel) with the integers big-endian. The client
// signs (server nonce, client nonce, its own geometry), the server (client
// nonce, server nonce, its own geometry), so neither answer can be replayed
// as the other; channel (the connection's TLS exporter value) binds both to
// one connection.
func mac(secret []byte, label string, first, second []byte, g geometry, channel []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(first)
	h.Write(second)
	var b [20]byte
	binary.BigEndian.PutUint32(b[0:], uint32(g.rank))
	binary.BigEndian.PutUint32(b[4:], uint32(g.size))
	binary.BigEndian.PutUint32(b[8:], uint32(g.chunk))
	binary.BigEndian.PutUint64(b[12:], g.gen)
	h.Write(b[:])
	h.Write(channel)
	return h.Sum(nil)
}

const (
	clientLabel = "tinct/allreduce/v2 client"
	serverLabel = "tinct/allreduce/v2 server"
)

// channelBinding is the exporter label of the ring's connections.
const channelBinding = "EXPORTER-tinct-allreduce-v2"

func newNonce() []byte {
	n := make([]byte, nonceLen)
	_, _ = rand.Read(n) // crypto/rand.Read never fails on supported platforms
	return n
}

func (r *Ring) geometry() geometry {
	return geometry{rank: int32(r.cfg.Rank), size: int32(r.cfg.Size), chunk: int32(r.cfg.ChunkBytes), gen: r.cfg.Generation}
}

// hello is this rank's answer in the handshake: its geometry and the mac.
func (r *Ring) hello(nonce, m []byte) *Frame {
	g := r.geometry()
	return &Frame{Body: &Frame_Hello{Hello: &Hello{Rank: g.rank, Size: g.size, ChunkBytes: g.chunk, Generation: g.gen, Nonce: nonce, Mac: m}}}
}

// serverHandshake challenges a new stream and accepts it as this rank's
// inbound stream, or returns the gRPC status that refuses it. A refused
// peer does not break the ring.
func (r *Ring) serverHandshake(stream grpc.BidiStreamingServer[Frame, Frame], from string) error {
	nonce := newNonce()
	if err := stream.Send(&Frame{Body: &Frame_Hello{Hello: &Hello{Nonce: nonce}}}); err != nil {
		return err
	}
	// Wait for the answer, but not for ever: a peer that opens a stream and
	// goes quiet must not pin this handler.
	wait := r.cfg.Timeout
	if wait <= 0 {
		wait = DefaultTimeout
	}
	type result struct {
		f   *Frame
		err error
	}
	got := make(chan result, 1)
	go func() {
		f, err := stream.Recv()
		got <- result{f, err}
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var h *Hello
	select {
	case res := <-got:
		if res.err != nil {
			return res.err
		}
		if h = res.f.GetHello(); h == nil {
			return status.Error(codes.InvalidArgument, "expected a hello frame")
		}
	case <-timer.C:
		r.log.Warn("allreduce: peer opened a stream but did not answer the challenge", "rank", r.cfg.Rank, "peer", from, "waited", wait)
		return status.Errorf(codes.DeadlineExceeded, "rank %d: no answer to the challenge within %s", r.cfg.Rank, wait)
	case <-r.dead:
		return status.Errorf(codes.Unavailable, "rank %d: ring is closed or broken", r.cfg.Rank)
	}

	channel := tlsbind.Of(stream.Context(), channelBinding)
	theirs := helloGeometry(h)
	want := mac(r.cfg.Secret, clientLabel, nonce, h.Nonce, theirs, channel)
	if len(h.Nonce) != nonceLen || !hmac.Equal(h.Mac, want) {
		r.log.Warn("allreduce: refused a peer that failed authentication (wrong cluster secret?)",
			"rank", r.cfg.Rank, "peer", from, "claimed_rank", h.Rank)
		return status.Errorf(codes.Unauthenticated,
			"rank %d refused %s: it does not know the cluster secret", r.cfg.Rank, from)
	}
	if want := (geometry{rank: int32(r.prev()), size: int32(r.cfg.Size), chunk: int32(r.cfg.ChunkBytes), gen: r.cfg.Generation}); theirs != want {
		r.log.Warn("allreduce: refused a peer with another ring geometry", "rank", r.cfg.Rank, "peer", from, "it_is", theirs.String(), "want", want.String())
		return status.Errorf(codes.FailedPrecondition,
			"%s expects %s to connect, got %s from %s: ranks disagree on the ring",
			r.geometry(), want, theirs, from)
	}
	r.mu.Lock()
	switch {
	case r.broken != nil:
		r.mu.Unlock()
		return status.Errorf(codes.Unavailable, "rank %d: ring is closed or broken", r.cfg.Rank)
	case r.inbound:
		r.mu.Unlock()
		r.log.Warn("allreduce: refused a second stream from the previous rank", "rank", r.cfg.Rank, "peer", from)
		return status.Errorf(codes.AlreadyExists, "rank %d already has its previous rank %d connected", r.cfg.Rank, r.prev())
	}
	r.inbound = true
	r.mu.Unlock()
	proof := mac(r.cfg.Secret, serverLabel, h.Nonce, nonce, r.geometry(), channel)
	if err := stream.Send(r.hello(nil, proof)); err != nil {
		r.fail(fmt.Errorf("allreduce: rank %d: previous rank %d (%s) went away during the handshake: %w", r.cfg.Rank, r.prev(), from, describe(err)))
		return err
	}
	return nil
}

// clientHandshake answers the next rank's challenge and checks its proof.
func (r *Ring) clientHandshake(stream grpc.BidiStreamingClient[Frame, Frame], addr string) error {
	where := fmt.Sprintf("rank %d: connect to next rank %d at %s", r.cfg.Rank, r.next(), addr)
	f, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("allreduce: %s: %w", where, describe(err))
	}
	ch := f.GetHello()
	if ch == nil || len(ch.Nonce) != nonceLen {
		return fmt.Errorf("allreduce: %s: the server did not send a valid challenge (is it a tinct all-reduce server?)", where)
	}
	cn := newNonce()
	channel := tlsbind.Of(stream.Context(), channelBinding)
	m := mac(r.cfg.Secret, clientLabel, ch.Nonce, cn, r.geometry(), channel)
	if err := stream.Send(r.hello(cn, m)); err != nil {
		if _, err2 := stream.Recv(); err2 != nil {
			err = err2 // the status says why the server ended the stream
		}
		return r.refused(where, err)
	}
	f, err = stream.Recv()
	if err != nil {
		return r.refused(where, err)
	}
	sh := f.GetHello()
	theirs := helloGeometry(sh)
	want := mac(r.cfg.Secret, serverLabel, cn, ch.Nonce, theirs, channel)
	if !hmac.Equal(sh.GetMac(), want) {
		r.log.Warn("allreduce: next rank failed to prove the cluster secret", "rank", r.cfg.Rank, "peer", addr)
		return fmt.Errorf("%w: %s: the server could not prove it knows the cluster secret; check that every rank uses the same secret", ErrAuth, where)
	}
	if exp := (geometry{rank: int32(r.next()), size: int32(r.cfg.Size), chunk: int32(r.cfg.ChunkBytes), gen: r.cfg.Generation}); theirs != exp {
		return fmt.Errorf("allreduce: %s: it is %s, this rank expects %s: ranks disagree on the ring", where, theirs, exp)
	}
	return nil
}

func (r *Ring) refused(where string, err error) error {
	err = describe(err)
	if errors.Is(err, ErrAuth) {
		r.log.Warn("allreduce: next rank refused this rank's credentials", "rank", r.cfg.Rank, "error", err)
		return fmt.Errorf("allreduce: %s: refused: %w; check that every rank uses the same cluster secret", where, err)
	}
	return fmt.Errorf("allreduce: %s: refused: %w", where, err)
}
