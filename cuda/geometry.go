package cuda

import (
	"fmt"
	"math"
)

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z uint32 }

// D1 is a one-dimensional shape.
func D1(x int) Dim3 { return Dim3{uint32(x), 1, 1} }

// Count is X·Y·Z.
func (d Dim3) Count() int { return int(d.X) * int(d.Y) * int(d.Z) }

const (
	// MaxElems bounds the element count of one launch: kernels take counts
	// as int.
	MaxElems = math.MaxInt32
	// BlocksPerSM is how many blocks of Threads a grid-stride launch gives
	// each multiprocessor before the loop takes over.
	BlocksPerSM = 16
	// MaxPartials caps the blocks of a launch that writes one partial sum
	// per block (mse): the partials buffer holds this many doubles.
	MaxPartials = 1024
	// defaultGridCap is the block cap when the multiprocessor count is not
	// known (the CPU shim).
	defaultGridCap = 4096
)

// GridStride returns the launch of a grid-stride kernel over n elements:
// Threads per block and one element per thread, capped at BlocksPerSM
// blocks per multiprocessor (sms ≤ 0: unknown). n = 0 gives an empty grid,
// which Launch skips.
func GridStride(n, sms int) (grid, block Dim3, err error) {
	if n < 0 || n > MaxElems {
		return Dim3{}, Dim3{}, fmt.Errorf("cuda: %d elements: a launch covers 0 to %d", n, MaxElems)
	}
	limit := defaultGridCap
	if sms > 0 {
		limit = sms * BlocksPerSM
	}
	blocks := min((n+Threads-1)/Threads, limit)
	return D1(blocks), D1(Threads), nil
}

// ReduceGrid is GridStride for kernels that write a partial sum per block:
// at most MaxPartials blocks.
func ReduceGrid(n, sms int) (grid, block Dim3, err error) {
	grid, block, err = GridStride(n, sms)
	grid.X = min(grid.X, MaxPartials)
	return grid, block, err
}

// PerChannel is the launch of the per-channel reductions (BatchNorm
// statistics and backward, bias gradient): one block of Threads per
// channel, each looping over its n·hw values.
func PerChannel(c, n, hw int) (grid, block Dim3, err error) {
	if c < 0 || c > math.MaxInt32 || n < 0 || hw < 0 || n*hw > MaxElems || c*n*hw > math.MaxInt64/2 {
		return Dim3{}, Dim3{}, fmt.Errorf("cuda: per-channel launch of %d channels of %d×%d values", c, n, hw)
	}
	if n*hw == 0 {
		c = 0
	}
	return D1(c), D1(Threads), nil
}

// CheckLimits reports a launch the device cannot run: more threads per
// block than maxThreads, or a grid wider than maxGridX.
func CheckLimits(grid, block Dim3, maxThreads, maxGridX int) error {
	if block.Count() > maxThreads || block.Count() == 0 {
		return fmt.Errorf("cuda: block of %d threads (device limit %d)", block.Count(), maxThreads)
	}
	if int(grid.X) > maxGridX || grid.Y > 65535 || grid.Z > 65535 {
		return fmt.Errorf("cuda: grid %v exceeds the device's (%d, 65535, 65535)", grid, maxGridX)
	}
	return nil
}
