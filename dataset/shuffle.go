package dataset

import "github.com/tinct/tinct/internal/rngs"

// Permutation returns a permutation of 0..n−1 that depends only on
// (n, seed, epoch): the same arguments give the same order on every
// machine, run and Go release, and different epochs give independent
// orders. n ≤ 0 gives an empty slice. It is rngs.Permutation, the epoch
// order of the randomness contract (internal/rngs), which the control
// core uses directly.
func Permutation(n int, seed uint64, epoch int) []int {
	return rngs.Permutation(n, seed, epoch)
}
