// Package rngs is tinct's randomness contract: every random draw that
// decides what a run computes comes from one of the streams below, and each
// stream is a function of the run's seed and the draw's coordinates (epoch,
// step, example index) only — never of which worker computes it, how the
// batch was split, the machine, the clock or the Go release. That is what
// makes a resumed run, a re-sharded run and a one-process run compute the
// same bits as the run they stand for (docs/design.md §3, "Determinism";
// BatchNorm statistics per share are the one stated exception, and they
// are not random).
//
// The package imports only the standard library, so that the deterministic
// core (package control) can use it without linking any I/O.
//
// # The seed
//
// A run has one seed: the configuration's `seed` (configs/config.yaml),
// recorded in every checkpoint's state.json (trainstate; resuming with
// another seed is allowed and logged, and the run then no longer repeats
// the original). The split shuffle has its own: `tinct data prepare
// --seed` (default 42), or the run's seed when `tinct train` prepares a
// folder itself; the dataset's manifest records it. Below, γ = 0x9e3779b97f4a7c15 (the
// golden-ratio constant of SplitMix64) and mix64 is SplitMix64's
// finalizer.
//
// # The streams
//
// Every generator is math/rand/v2's PCG, whose output for given seeds is
// specified and fixed across Go releases.
//
//   - Split shuffle — [SplitPermutation](n, seed): the order in which
//     `tinct data prepare` deals the n usable photos to val (first),
//     test (next) and train (the rest). Fisher–Yates from the end with
//     Lemire's unbiased bounded integers on
//     PCG(mix64(seed ^ "split"), mix64(0 + γ)), "split" being the bytes
//     0x73706c6974. Used by dataset.Prepare.
//   - Epoch order — [Permutation](n, seed, epoch): the order of the n
//     training examples in epoch e, the same Fisher–Yates on
//     PCG(mix64(seed ^ 0), mix64(e + γ)); different epochs give
//     independent orders and the split shuffle never coincides with an
//     epoch's. Step k of the epoch is the examples at positions
//     k·B … k·B+B−1 (B the batch size; an epoch's last partial batch is
//     dropped), and the control core deals those B out to the ring's
//     ranks; a resume at (epoch, step_in_epoch) recomputes the order and
//     goes on from there. Used by package control.
//   - Flips — [Flip](seed, epoch, index): whether example index is
//     mirrored in epoch (only when the configuration's `flip` is on): one
//     IntN(2) of PCG(seed ^ 0xd1b54a32d192ed03·(epoch+1), index + 2⁴⁰),
//     1 meaning mirrored. Used by the worker.
//   - Example noise — [Example](seed, step, index): the diffusion time and
//     noise of example index at global step step, from
//     PCG(seed ^ γ·(step+1), index). model.NoisyExample draws the time
//     first, IntN(T) with T = 1000, then the 3·H·W values of ε as
//     NormFloat64 in CHW order. Keyed by the step and not the epoch, so
//     an example seen again (next epoch, or a step computed again after a
//     fault) draws afresh or identically exactly as the step says. Used
//     by the worker.
//   - Initial weights — [Init](seed): PCG(seed, 0x5eed) wrapped in a
//     rand.Rand; model.UNet.Init draws one Float64 per weight and bias in
//     the parameter layout's order (the head stays zero). Used by
//     trainstate.New for a fresh run (the EMA starts as a copy).
//   - Sample grids — [SampleGrid](seed): PCG(seed, 0x6a1d); the DDIM
//     starting noise of the coordinator's sample grids (the first
//     validation images, one sample each, colorize.Grid), NormFloat64
//     image by image (model.Sampler.Colorize). Every grid of a run starts from the same
//     noise, so grids at different epochs compare like with like.
//   - Colorizing — [Sampler](seed): PCG(seed, 0), the DDIM starting noise
//     for a seed given by a person, drawn by the one colorize pipeline
//     (colorize.Pipeline.Photo): `tinct colorize --seed` and the web app,
//     which picks a seed per request when none is given and reports it,
//     so a result can be made again; also `tinct train`'s closing
//     colorized.png (the run's seed) and quality.Evaluate (`tinct eval
//     --seed`, one stream over its batches).
//
// Draws through rand.Rand (IntN, Float64, NormFloat64) also depend on
// math/rand/v2's algorithms for those; the permutations use PCG's raw
// output only. TestGolden pins a value of every stream, so a change to
// any of this — ours or a Go release's — fails a test instead of silently
// changing runs and the meaning of checkpoints' positions.
//
// # Outside the contract
//
// Not part of a run's result, and free to be nondeterministic or to use
// their own generators: run ids, worker instance ids and the web app's
// result ids (crypto/rand); `tinct sim`'s step-time jitter (its own PCG
// from the simulation's seed, sim/sim.go); the synthetic data of `tinct
// bench`; and tests.
package rngs

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

// SplitPermutation returns the order in which dataset preparation deals n
// photos to the splits: a permutation of 0..n−1 that depends only on
// (n, seed) and is never an epoch's order for the same seed.
func SplitPermutation(n int, seed uint64) []int {
	return permute(n, seed, domainSplit, 0)
}

// Example is the random stream of one example at one step: its diffusion
// time and noise depend only on (seed, step, index), never on which worker
// computes it or how the batch was split.
func Example(seed uint64, step int64, index int) *rand.Rand {
	return rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15*uint64(step+1), uint64(index)))
}

// Flip decides whether an example is mirrored in an epoch.
func Flip(seed uint64, epoch, index int) bool {
	return rand.New(rand.NewPCG(seed^0xd1b54a32d192ed03*uint64(epoch+1), uint64(index)+1<<40)).IntN(2) == 1
}

// Init is the stream a fresh run's network weights are drawn from.
func Init(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// SampleGrid is the stream of the starting noise of a run's sample grids.
func SampleGrid(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6a1d)) }

// Sampler is the stream of the starting noise of a colorization made
// with seed.
func Sampler(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0)) }

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
