package allreduce

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestChallengeTellsStrangersNothing: the first frame a ring server sends
// to whoever connects is a bare nonce; its rank, world size and chunk size
// go only to a peer that has proved the secret.
func TestChallengeTellsStrangersNothing(t *testing.T) {
	r, err := Listen(Config{Rank: 1, Size: 3, Listen: "127.0.0.1:0", Secret: testSecret, Generation: 7, Timeout: 5 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cc, err := grpc.NewClient(r.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := NewRingClient(cc).Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	h := f.GetHello()
	if h == nil || len(h.Nonce) != nonceLen {
		t.Fatalf("first frame %v, want a hello with a nonce", f)
	}
	if h.Rank != 0 || h.Size != 0 || h.ChunkBytes != 0 || h.Generation != 0 || len(h.Mac) != 0 {
		t.Errorf("the challenge told a stranger rank %d, size %d, chunk %d, generation %d", h.Rank, h.Size, h.ChunkBytes, h.Generation)
	}
}

// TestHandshakeBindsGeneration: ranks that know the secret but belong to
// different generations of the ring refuse each other.
func TestHandshakeBindsGeneration(t *testing.T) {
	var rings []*Ring
	for rank, gen := range []uint64{4, 5} {
		r, err := Listen(Config{Rank: rank, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, Generation: gen, Timeout: 5 * time.Second, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rings = append(rings, r)
	}
	err := rings[0].Connect(context.Background(), rings[1].Addr())
	if err == nil || !strings.Contains(err.Error(), "generation") {
		t.Fatalf("generation 4 connecting to generation 5: got %v, want a refusal naming the generations", err)
	}
}
