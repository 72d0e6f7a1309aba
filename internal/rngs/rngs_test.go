package rngs

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func digest(p []int) string {
	h := sha256.New()
	for _, v := range p {
		fmt.Fprintf(h, "%d,", v)
	}
	return fmt.Sprintf("%x", h.Sum(nil))[:16]
}

// TestGolden pins one value of every stream of the contract. The values
// were computed by the code as it stood before it moved here
// (dataset/shuffle.go, worker.ExampleRNG and worker.FlipOf, and the
// PCG(seed, k) of trainstate, the coordinator and tinct colorize): a
// failure means runs, resumes and checkpoints' positions would change.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []int
		want []int
	}{
		{"Permutation(10, 42, 0)", Permutation(10, 42, 0), []int{1, 9, 3, 5, 6, 7, 8, 4, 0, 2}},
		{"Permutation(12, 7, 3)", Permutation(12, 7, 3), []int{2, 4, 9, 1, 0, 8, 6, 10, 5, 11, 3, 7}},
		{"Permutation(12, 7, -1)", Permutation(12, 7, -1), []int{6, 2, 1, 0, 4, 11, 10, 5, 7, 8, 9, 3}},
		{"SplitPermutation(10, 42)", SplitPermutation(10, 42), []int{5, 9, 7, 4, 6, 1, 0, 3, 8, 2}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if got, want := digest(Permutation(28000, 1, 99)), "480bbe69c7ad7649"; got != want {
		t.Errorf("Permutation(28000, 1, 99): digest %s, want %s", got, want)
	}
	if got, want := digest(SplitPermutation(28000, 1)), "2d2f50a5199b05f5"; got != want {
		t.Errorf("SplitPermutation(28000, 1): digest %s, want %s", got, want)
	}

	r := Example(42, 7, 3)
	if got := r.IntN(1000); got != 456 {
		t.Errorf("Example(42, 7, 3): time %d, want 456", got)
	}
	for i, want := range []uint64{0x3faf4af4abf74660, 0x3fc268d668c669c0, 0x3fadb58c41ce59a4} {
		if got := math.Float64bits(r.NormFloat64()); got != want {
			t.Errorf("Example(42, 7, 3): noise %d is %#x, want %#x", i, got, want)
		}
	}

	var flips uint64
	for i := range 64 {
		if Flip(5, 1, i) {
			flips |= 1 << i
		}
	}
	if flips != 0x4686ffd8ad79f983 {
		t.Errorf("Flip(5, 1, 0…63) = %#x, want 0x4686ffd8ad79f983", flips)
	}

	for _, tc := range []struct {
		name       string
		rng        *rand.Rand
		uni, gauss uint64
	}{
		{"Init", Init(42), 0x3fa2b052b28d3dd0, 0xbfe94a5cc9eb6d90},
		{"SampleGrid", SampleGrid(42), 0x3fe90449b10310d8, 0x3fd9171df6634d98},
		{"Sampler", Sampler(42), 0x3fd036e5b70f533e, 0x3ff2f1ce165fc36c},
	} {
		if u, g := math.Float64bits(tc.rng.Float64()), math.Float64bits(tc.rng.NormFloat64()); u != tc.uni || g != tc.gauss {
			t.Errorf("%s(42): Float64 %#x, NormFloat64 %#x; want %#x, %#x", tc.name, u, g, tc.uni, tc.gauss)
		}
	}
}

// TestSamplerIsPCG0: quality.Evaluate and the web app build PCG(seed, 0)
// themselves; Sampler must stay that stream.
func TestSamplerIsPCG0(t *testing.T) {
	a, b := Sampler(9), rand.New(rand.NewPCG(9, 0))
	for range 8 {
		if a.Uint64() != b.Uint64() {
			t.Fatal("Sampler(seed) is not PCG(seed, 0)")
		}
	}
}

// TestSplitIsNotAnEpoch: the split shuffle and the epoch orders of one
// seed are different streams.
func TestSplitIsNotAnEpoch(t *testing.T) {
	split := SplitPermutation(1000, 42)
	for e := range 4 {
		if slices.Equal(split, Permutation(1000, 42, e)) {
			t.Fatalf("split shuffle equals epoch %d's order", e)
		}
	}
}

// TestPermutation: every order is a permutation, the same for the same
// arguments and different for other seeds and epochs (TestGolden pins the
// values themselves).
func TestPermutation(t *testing.T) {
	for _, tc := range []struct {
		n     int
		seed  uint64
		epoch int
	}{{0, 1, 0}, {1, 1, 0}, {2, 7, 3}, {10, 0, 0}, {1000, 42, 5}, {1000, 42, -1}, {28000, 1, 99}} {
		a, b := Permutation(tc.n, tc.seed, tc.epoch), Permutation(tc.n, tc.seed, tc.epoch)
		ok := len(a) == tc.n
		for i, v := range slices.Sorted(slices.Values(a)) {
			ok = ok && v == i
		}
		if !ok {
			t.Fatalf("Permutation(%d, %d, %d) is not a permutation", tc.n, tc.seed, tc.epoch)
		}
		if !slices.Equal(a, b) {
			t.Fatalf("Permutation(%d, %d, %d) not deterministic", tc.n, tc.seed, tc.epoch)
		}
	}
	if p := Permutation(-5, 1, 1); p == nil || len(p) != 0 {
		t.Fatalf("negative n: got %v, want empty", p)
	}
	base := Permutation(1000, 42, 0)
	for _, other := range [][]int{Permutation(1000, 42, 1), Permutation(1000, 42, 2), Permutation(1000, 43, 0)} {
		if slices.Equal(base, other) {
			t.Fatal("two different (seed, epoch) pairs gave the same order")
		}
	}
	if slices.IsSorted(base) {
		t.Fatal("permutation of 1000 is sorted")
	}
}

// TestPermutationUniform: each of the 6 orders of 3 items over many epochs
// appears about equally often.
func TestPermutationUniform(t *testing.T) {
	counts := map[[3]int]int{}
	const epochs = 6000
	for e := range epochs {
		p := Permutation(3, 9, e)
		counts[[3]int(p)]++
	}
	if len(counts) != 6 {
		t.Fatalf("saw %d of 6 orders", len(counts))
	}
	for order, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("order %v seen %d times in %d, want about 1000", order, c, epochs)
		}
	}
}

// TestFlipBalanced: about half the examples of an epoch are mirrored
// (TestGolden pins the values).
func TestFlipBalanced(t *testing.T) {
	flips := 0
	for i := range 200 {
		if Flip(5, 1, i) {
			flips++
		}
	}
	if flips < 70 || flips > 130 {
		t.Fatalf("%d of 200 examples flipped", flips)
	}
}
