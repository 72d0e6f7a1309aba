package dataset

import (
	"slices"
	"testing"
)

func TestPermutation(t *testing.T) {
	isPerm := func(p []int, n int) bool {
		s := slices.Clone(p)
		slices.Sort(s)
		for i, v := range s {
			if v != i {
				return false
			}
		}
		return len(s) == n
	}
	tests := []struct {
		n     int
		seed  uint64
		epoch int
	}{
		{0, 1, 0}, {1, 1, 0}, {2, 7, 3}, {10, 0, 0}, {1000, 42, 5}, {1000, 42, -1}, {28000, 1, 99},
	}
	for _, tc := range tests {
		a, b := Permutation(tc.n, tc.seed, tc.epoch), Permutation(tc.n, tc.seed, tc.epoch)
		if !isPerm(a, tc.n) {
			t.Fatalf("Permutation(%d, %d, %d) is not a permutation", tc.n, tc.seed, tc.epoch)
		}
		if !slices.Equal(a, b) {
			t.Fatalf("Permutation(%d, %d, %d) not deterministic", tc.n, tc.seed, tc.epoch)
		}
	}
	if p := Permutation(-5, 1, 1); p == nil || len(p) != 0 {
		t.Fatalf("negative n: got %v, want empty", p)
	}

	// Different epochs and seeds give different orders.
	base := Permutation(1000, 42, 0)
	for _, other := range [][]int{Permutation(1000, 42, 1), Permutation(1000, 42, 2), Permutation(1000, 43, 0)} {
		if slices.Equal(base, other) {
			t.Fatal("two different (seed, epoch) pairs gave the same order")
		}
	}
	if slices.IsSorted(base) {
		t.Fatal("permutation of 1000 is sorted")
	}

	// The order must never change between releases: checkpoints resume
	// mid-epoch by position in it.
	if got, want := Permutation(10, 42, 0), []int{1, 9, 3, 5, 6, 7, 8, 4, 0, 2}; !slices.Equal(got, want) {
		t.Fatalf("Permutation(10, 42, 0) = %v, want %v (the shuffle algorithm changed)", got, want)
	}
}

func TestPermutationUniform(t *testing.T) {
	// Each of the 6 orders of 3 items over many epochs should appear about
	// equally often.
	counts := map[[3]int]int{}
	const epochs = 6000
	for e := 0; e < epochs; e++ {
		p := Permutation(3, 9, e)
		counts[[3]int{p[0], p[1], p[2]}]++
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
