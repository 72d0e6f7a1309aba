package dataset

import (
	"math/bits"
	"math/rand/v2"
)

// Random streams are told apart by a domain tag mixed into the seed, so the
// prepare-time split shuffle and the per-epoch orders never coincide.
const (
	domainEpoch uint64 = 0
	domainSplit uint64 = 0x73706c6974 // "split"
)

// Permutation returns a permutation of 0..n−1 that depends only on
// (n, seed, epoch): the same arguments give the same order on every
// machine, run and Go release, and different epochs give independent
// orders. n ≤ 0 gives an empty slice.
func Permutation(n int, seed uint64, epoch int) []int {
	return permute(n, seed, domainEpoch, uint64(epoch))
}

// permute is a Fisher–Yates shuffle driven by PCG (a specified generator
// whose output is stable across Go releases) with Lemire's unbiased bounded
// integers, seeded by SplitMix64-mixed (seed, domain, index).
func permute(n int, seed, domain, index uint64) []int {
	if n <= 0 {
		return []int{}
	}
	rng := rand.NewPCG(mix64(seed^domain), mix64(index+0x9e3779b97f4a7c15))
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(uint64n(rng, uint64(i+1)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// uint64n returns a uniform integer in [0, n), n > 0 (Lemire, 2019).
func uint64n(rng *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(rng.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(rng.Uint64(), n)
		}
	}
	return hi
}

// mix64 is the SplitMix64 finalizer, a bijection that spreads nearby seeds
// far apart.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
