package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinct/tinct/internal/syncbuf"

	"google.golang.org/grpc"
)

var testSecret = []byte("tinct test cluster secret")

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startRings starts n ranks on 127.0.0.1 and connects them into a ring.
// Every Ring is closed when the test ends.
func startRings(t testing.TB, n int, mod func(*Config)) []*Ring {
	t.Helper()
	rings := make([]*Ring, n)
	for i := range n {
		cfg := Config{Rank: i, Size: n, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: 20 * time.Second, Logger: quiet}
		if mod != nil {
			mod(&cfg)
		}
		r, err := Listen(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		rings[i] = r
	}
	for i, r := range rings {
		if err := r.Connect(context.Background(), rings[(i+1)%n].Addr()); err != nil {
			t.Fatal(err)
		}
	}
	return rings
}

// onAll runs fn for every rank concurrently and returns the errors by rank.
func onAll(rings []*Ring, fn func(rank int, r *Ring) error) []error {
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Go(func() { errs[i] = fn(i, r) })
	}
	wg.Wait()
	return errs
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
}

// randomVectors returns one vector per rank (normal values of varied scale)
// and the float64 sum with the sum of magnitudes, for the tolerance.
func randomVectors(n, length int, seed uint64) (vecs [][]float32, ref, mag []float64) {
	vecs = make([][]float32, n)
	ref = make([]float64, length)
	mag = make([]float64, length)
	for i := range n {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		v := make([]float32, length)
		for j := range v {
			v[j] = float32(rng.NormFloat64() * math.Exp2(float64(rng.IntN(20)-10)))
			ref[j] += float64(v[j])
			mag[j] += math.Abs(float64(v[j]))
		}
		vecs[i] = v
	}
	return vecs, ref, mag
}

// checkSums checks every rank against the float64 reference (float32
// rounding of n terms) and that all ranks hold the same bytes.
func checkSums(t *testing.T, vecs [][]float32, ref, mag []float64, scale float64) {
	t.Helper()
	n := float64(len(vecs))
	for i, v := range vecs {
		for j, got := range v {
			want := ref[j] * scale
			if d := math.Abs(float64(got) - want); d > 2*n*1.2e-7*mag[j]*scale+1e-30 {
				t.Fatalf("rank %d element %d: got %g, want %g (error %g)", i, j, got, want, d)
			}
		}
	}
	for i := 1; i < len(vecs); i++ {
		for j := range vecs[i] {
			if math.Float32bits(vecs[i][j]) != math.Float32bits(vecs[0][j]) {
				t.Fatalf("rank %d element %d: %x differs from rank 0's %x", i, j,
					math.Float32bits(vecs[i][j]), math.Float32bits(vecs[0][j]))
			}
		}
	}
}

func TestAllReduceSums(t *testing.T) {
	lengths := []int{0, 1, 3, 7, 1000, 1_000_003}
	for _, tc := range []struct {
		size       int
		chunkBytes int // 0: default
		maxLen     int
	}{
		{1, 0, 1_000_003},
		{2, 0, 1_000_003},
		{3, 0, 1_000_003},
		{4, 0, 1_000_003},
		{5, 0, 1_000_003},
		// tiny chunks: many chunks per segment, deep pipelines
		{2, 12, 1000},
		{3, 12, 1000},
		{4, 40, 1000},
		{5, 4, 1000},
	} {
		t.Run(fmt.Sprintf("size=%d/chunk=%d", tc.size, tc.chunkBytes), func(t *testing.T) {
			if testing.Short() && tc.size == 5 {
				tc.maxLen = 1000
			}
			rings := startRings(t, tc.size, func(c *Config) { c.ChunkBytes = tc.chunkBytes })
			for step, length := range lengths {
				if length > tc.maxLen {
					continue
				}
				t.Run(fmt.Sprintf("len=%d", length), func(t *testing.T) {
					vecs, ref, mag := randomVectors(tc.size, length, uint64(1000*tc.size+step))
					noErrors(t, onAll(rings, func(i int, r *Ring) error {
						return r.AllReduce(context.Background(), int64(step), vecs[i])
					}))
					checkSums(t, vecs, ref, mag, 1)
				})
			}
		})
	}
}

func TestPlanCoversVector(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		for _, length := range []int{0, 1, 4, 7, 100} {
			for _, ce := range []int{1, 3, 64} {
				p := plan{n: n, length: length, ce: ce}
				next := 0
				for s := range n {
					for k := range p.chunks(s) {
						lo, hi := p.chunk(s, k)
						if lo != next || hi < lo {
							t.Fatalf("n=%d len=%d ce=%d: segment %d chunk %d is [%d,%d), want it to start at %d", n, length, ce, s, k, lo, hi, next)
						}
						next = hi
					}
				}
				if next != length {
					t.Fatalf("n=%d len=%d ce=%d: chunks end at %d", n, length, ce, next)
				}
			}
		}
	}
}

func TestManyStepsAndAverage(t *testing.T) {
	const n, length, steps = 3, 257, 200
	rings := startRings(t, n, func(c *Config) { c.ChunkBytes = 64 })
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = make([]float32, length)
	}
	for step := range int64(steps) {
		// small integers: the sums are exact, so the check is exact
		for i, v := range vecs {
			for j := range v {
				v[j] = float32((int(step)*7 + i*13 + j) % 101)
			}
		}
		average := step%2 == 1
		noErrors(t, onAll(rings, func(i int, r *Ring) error {
			if average {
				return r.Average(context.Background(), step, vecs[i])
			}
			return r.AllReduce(context.Background(), step, vecs[i])
		}))
		for j := range length {
			want := float32(0)
			for i := range n {
				want += float32((int(step)*7 + i*13 + j) % 101)
			}
			if average {
				want /= n
			}
			for i := range n {
				if vecs[i][j] != want {
					t.Fatalf("step %d rank %d element %d: got %g, want %g", step, i, j, vecs[i][j], want)
				}
			}
		}
	}
}

// Reducing a vector in three sub-slice calls (buckets) gives the sums of
// one call; the ranks agree bitwise either way.
func TestSubSlicesEqualOneCall(t *testing.T) {
	const n, length = 3, 1000
	cuts := [][2]int{{650, 1000}, {100, 650}, {0, 100}} // back to front, as backward produces them
	rings := startRings(t, n, func(c *Config) { c.ChunkBytes = 256 })

	t.Run("exact", func(t *testing.T) {
		whole := make([][]float32, n)
		parts := make([][]float32, n)
		for i := range n {
			whole[i] = make([]float32, length)
			for j := range whole[i] {
				whole[i][j] = float32((i*31 + j*17) % 1000)
			}
			parts[i] = append([]float32(nil), whole[i]...)
		}
		noErrors(t, onAll(rings, func(i int, r *Ring) error {
			return r.AllReduce(context.Background(), 1, whole[i])
		}))
		noErrors(t, onAll(rings, func(i int, r *Ring) error {
			for _, c := range cuts {
				if err := r.AllReduce(context.Background(), 2, parts[i][c[0]:c[1]]); err != nil {
					return err
				}
			}
			return nil
		}))
		for i := range n {
			for j := range length {
				if parts[i][j] != whole[i][j] {
					t.Fatalf("rank %d element %d: buckets give %g, one call %g", i, j, parts[i][j], whole[i][j])
				}
			}
		}
	})
	t.Run("random", func(t *testing.T) {
		vecs, ref, mag := randomVectors(n, length, 7)
		noErrors(t, onAll(rings, func(i int, r *Ring) error {
			for _, c := range cuts {
				if err := r.AllReduce(context.Background(), 3, vecs[i][c[0]:c[1]]); err != nil {
					return err
				}
			}
			return nil
		}))
		checkSums(t, vecs, ref, mag, 1)
	})
}

func TestOverlap(t *testing.T) {
	const n, length = 3, 10_000
	rings := startRings(t, n, func(c *Config) { c.ChunkBytes = 4096 })
	vecs, ref, mag := randomVectors(n, length, 11)
	// buckets with minBucket 1000: [9000,10000) [5000,9000) [100,5000) [0,100)
	tails := []int{9000, 8800, 8800, 5000, 100}
	noErrors(t, onAll(rings, func(i int, r *Ring) error {
		o := r.Overlap(context.Background(), 5, vecs[i], 1000)
		for _, from := range tails {
			o.Ready(from)
		}
		return o.Wait()
	}))
	checkSums(t, vecs, ref, mag, 1)

	// A rank that announces a growing tail gets an error, and so do the others.
	errs := onAll(rings, func(i int, r *Ring) error {
		o := r.Overlap(context.Background(), 6, vecs[i], 1)
		o.Ready(5000)
		if i == 0 {
			o.Ready(6000)
		}
		return o.Wait()
	})
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "must decrease") {
		t.Fatalf("rank 0: got %v, want an error about decreasing offsets", errs[0])
	}
	for i, err := range errs[1:] {
		if err == nil {
			t.Errorf("rank %d: no error although rank 0 broke the ring", i+1)
		}
	}
}

func TestSizeOne(t *testing.T) {
	r, err := Listen(Config{Rank: 0, Size: 1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Addr() != "" {
		t.Errorf("Addr() = %q, want \"\" (nothing listens for a ring of one)", r.Addr())
	}
	if err := r.Connect(context.Background(), "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	v := []float32{1, 2, 3}
	if err := r.AllReduce(context.Background(), 0, v); err != nil {
		t.Fatal(err)
	}
	if err := r.Average(context.Background(), 1, v); err != nil {
		t.Fatal(err)
	}
	if err := r.Overlap(context.Background(), 2, v, 1).Wait(); err != nil {
		t.Fatal(err)
	}
	if v[0] != 1 || v[1] != 2 || v[2] != 3 {
		t.Fatalf("size 1 changed the data: %v", v)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Rank: 0, Size: 0}, "world size"},
		{Config{Rank: 2, Size: 2, Secret: testSecret}, "out of range"},
		{Config{Rank: -1, Size: 2, Secret: testSecret}, "out of range"},
		{Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0"}, "Secret is empty"},
		{Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, ChunkBytes: MaxChunkBytes + 4}, "chunk size"},
		{Config{Rank: 0, Size: 2, Listen: "127.0.0.1:bad", Secret: testSecret}, "listen"},
	} {
		tc.cfg.Logger = quiet
		r, err := Listen(tc.cfg)
		if err == nil {
			r.Close()
			t.Errorf("Listen(%+v) succeeded, want an error with %q", tc.cfg, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Listen(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

func TestWrongSecretIsRefused(t *testing.T) {
	var log syncbuf.Buffer
	server, err := Listen(Config{Rank: 1, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	intruder, err := Listen(Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0", Secret: []byte("guess"), Timeout: 10 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()

	err = intruder.Connect(context.Background(), server.Addr())
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("Connect with the wrong secret: got %v, want ErrAuth mentioning the secret", err)
	}
	if !strings.Contains(log.String(), "refused a peer that failed authentication") {
		t.Errorf("the refusal was not logged; log:\n%s", log.String())
	}
	if err := server.Err(); err != nil {
		t.Fatalf("a refused intruder broke the ring: %v", err)
	}
	// The rightful previous rank can still connect, and the ring works.
	rank0, err := Listen(Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: 10 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer rank0.Close()
	rings := []*Ring{rank0, server}
	if err := rank0.Connect(context.Background(), server.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := server.Connect(context.Background(), rank0.Addr()); err != nil {
		t.Fatal(err)
	}
	vecs, ref, mag := randomVectors(2, 100, 3)
	noErrors(t, onAll(rings, func(i int, r *Ring) error { return r.AllReduce(context.Background(), 0, vecs[i]) }))
	checkSums(t, vecs, ref, mag, 1)
}

// fakeServer serves the Ring service with a handler written by the test.
type fakeServer struct {
	UnimplementedRingServer
	pass func(grpc.BidiStreamingServer[Frame, Frame]) error
}

func (f *fakeServer) Pass(s grpc.BidiStreamingServer[Frame, Frame]) error { return f.pass(s) }

func startFake(t *testing.T, pass func(grpc.BidiStreamingServer[Frame, Frame]) error) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	RegisterRingServer(srv, &fakeServer{pass: pass})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// fakeHandshake plays the server's side of the handshake as rank 1 of 2
// with the given secret and returns the client's hello.
func fakeHandshake(s grpc.BidiStreamingServer[Frame, Frame], secret []byte, proof func(clientNonce, nonce []byte) []byte) error {
	nonce := newNonce()
	if err := s.Send(&Frame{Body: &Frame_Hello{Hello: &Hello{Nonce: nonce}}}); err != nil {
		return err
	}
	f, err := s.Recv()
	if err != nil {
		return err
	}
	h := f.GetHello()
	return s.Send(&Frame{Body: &Frame_Hello{Hello: &Hello{Rank: 1, Size: 2, ChunkBytes: DefaultChunkBytes, Mac: proof(h.Nonce, nonce)}}})
}

func TestServerWithoutSecretIsRefused(t *testing.T) {
	addr := startFake(t, func(s grpc.BidiStreamingServer[Frame, Frame]) error {
		if err := fakeHandshake(s, nil, func(_, _ []byte) []byte { return make([]byte, 32) }); err != nil {
			return err
		}
		<-s.Context().Done()
		return nil
	})
	r, err := Listen(Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: 10 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Connect(context.Background(), addr)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "could not prove") {
		t.Fatalf("Connect to a server without the secret: got %v, want ErrAuth", err)
	}
}

func TestRingMismatchIsRefused(t *testing.T) {
	rings := make([]*Ring, 3)
	for i := range rings {
		r, err := Listen(Config{Rank: i, Size: 3, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: 10 * time.Second, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rings[i] = r
	}
	// rank 0 dials rank 2's address instead of rank 1's
	err := rings[0].Connect(context.Background(), rings[2].Addr())
	if err == nil || !strings.Contains(err.Error(), "disagree on the ring") {
		t.Fatalf("got %v, want a ring mismatch", err)
	}
}

func TestStalledNeighbourTimesOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	within := func(t *testing.T, start time.Time) {
		t.Helper()
		// generous slack for loaded machines and -race; the point is "not hang"
		if d := time.Since(start); d > timeout+5*time.Second {
			t.Fatalf("returned after %s, want about %s", d, timeout)
		}
	}

	t.Run("peer never takes part", func(t *testing.T) {
		rings := startRings(t, 2, func(c *Config) { c.Timeout = timeout })
		start := time.Now()
		err := rings[0].AllReduce(context.Background(), 0, make([]float32, 1000))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a deadline error", err)
		}
		within(t, start)
		// the ring is now broken, and says so
		if err := rings[0].AllReduce(context.Background(), 1, make([]float32, 10)); !errors.Is(err, ErrBroken) {
			t.Fatalf("call on a broken ring: got %v, want ErrBroken", err)
		}
	})

	t.Run("server never answers the handshake", func(t *testing.T) {
		addr := startFake(t, func(s grpc.BidiStreamingServer[Frame, Frame]) error {
			<-s.Context().Done()
			return nil
		})
		r, err := Listen(Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: timeout, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		start := time.Now()
		if err := r.Connect(context.Background(), addr); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a deadline error", err)
		}
		within(t, start)
	})

	t.Run("server accepts and never reads", func(t *testing.T) {
		addr := startFake(t, func(s grpc.BidiStreamingServer[Frame, Frame]) error {
			err := fakeHandshake(s, testSecret, func(cn, n []byte) []byte {
				return mac(testSecret, serverLabel, cn, n, geometry{rank: 1, size: 2, chunk: DefaultChunkBytes}, nil)
			})
			if err != nil {
				return err
			}
			<-s.Context().Done() // and never Recv: flow control stops the sender
			return nil
		})
		r, err := Listen(Config{Rank: 0, Size: 2, Listen: "127.0.0.1:0", Secret: testSecret, Timeout: timeout, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.Connect(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		// 32 MiB: half of it is more than the flow-control window, so Send blocks
		err = r.AllReduce(context.Background(), 0, make([]float32, 8<<20))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a deadline error", err)
		}
		within(t, start)
	})

	t.Run("caller's context", func(t *testing.T) {
		rings := startRings(t, 2, nil) // Timeout 20 s: the context ends first
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		if err := rings[0].AllReduce(ctx, 0, make([]float32, 10)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a deadline error", err)
		}
		within(t, start)
	})
}

func TestNeighbourClosesMidOperation(t *testing.T) {
	rings := startRings(t, 3, func(c *Config) { c.ChunkBytes = 4096 })
	vecs, _, _ := randomVectors(3, 100_000, 5)
	var errs [2]error
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 2 {
		wg.Go(func() { errs[i] = rings[i].AllReduce(context.Background(), 0, vecs[i]) })
	}
	// Rank 2 sees the operation under way (a chunk from rank 1), then quits.
	<-rings[2].inbox
	rings[2].Close()
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Fatalf("rank %d: AllReduce succeeded although rank 2 closed", i)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("rank %d: waited for the deadline instead of noticing the close: %v", i, err)
		}
		t.Logf("rank %d: %v", i, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s to notice", d)
	}
}

func TestWrongStepIsRejected(t *testing.T) {
	t.Run("ranks disagree", func(t *testing.T) {
		rings := startRings(t, 2, nil)
		errs := onAll(rings, func(i int, r *Ring) error {
			return r.AllReduce(context.Background(), int64(7+i), make([]float32, 100))
		})
		// Whoever sees the other's chunk first rejects it and breaks the
		// ring; the other may see the break before the chunk.
		steps := 0
		for i, err := range errs {
			if err == nil {
				t.Fatalf("rank %d: AllReduce succeeded with ranks on different steps", i)
			}
			if errors.Is(err, ErrStep) {
				steps++
			}
		}
		if steps == 0 {
			t.Fatalf("no rank reported ErrStep: %v; %v", errs[0], errs[1])
		}
	})

	t.Run("late chunk of an abandoned step", func(t *testing.T) {
		rings := startRings(t, 2, nil)
		const length = 10
		// rank 0 sends a chunk of step 6 (its phase 0: segment 0)
		late := &Chunk{Step: 6, Phase: 0, Offset: 0, Total: length, Data: make([]byte, 4*5)}
		for i := range 5 {
			late.Data[4*i+3] = 0x40 // 2.0 little-endian
		}
		if err := rings[0].out.stream.Send(&Frame{Body: &Frame_Chunk{Chunk: late}}); err != nil {
			t.Fatal(err)
		}
		data := make([]float32, length)
		for i := range data {
			data[i] = 1
		}
		err := rings[1].AllReduce(context.Background(), 7, data)
		if !errors.Is(err, ErrStep) || !strings.Contains(err.Error(), "step 6") {
			t.Fatalf("got %v, want ErrStep naming step 6", err)
		}
		for i, x := range data {
			if x != 1 {
				t.Fatalf("element %d = %g: the late chunk was added", i, x)
			}
		}
	})
}

func TestLengthMismatch(t *testing.T) {
	rings := startRings(t, 2, nil)
	errs := onAll(rings, func(i int, r *Ring) error {
		return r.AllReduce(context.Background(), 0, make([]float32, 10+i))
	})
	for i, err := range errs {
		if err == nil {
			t.Fatalf("rank %d: no error for vectors of different lengths", i)
		}
	}
	if !strings.Contains(errs[0].Error()+errs[1].Error(), "same length") {
		t.Fatalf("errors do not name the cause: %v; %v", errs[0], errs[1])
	}
}

func TestConcurrentCallsRejected(t *testing.T) {
	rings := startRings(t, 2, nil)
	rings[0].op.Lock() // as if a call were running
	defer rings[0].op.Unlock()
	err := rings[0].AllReduce(context.Background(), 0, make([]float32, 4))
	if err == nil || !strings.Contains(err.Error(), "one goroutine") {
		t.Fatalf("got %v, want a concurrent-call error", err)
	}
}
