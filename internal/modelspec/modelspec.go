// Package modelspec holds the parts of the model's specification
// (docs/design.md §1) that need no tensors: the network's shape and the
// mapping between 8-bit pixel levels and the network's range [−1, 1].
// Package model re-exports them (model.Config, model.DefaultConfig,
// model.PixelToUnit, model.UnitToPixel); they live here so that config and
// track can use them without linking the network. It imports only the
// standard library.
package modelspec

import (
	"fmt"
	"math"
)

// Config is the network's shape.
type Config struct {
	Widths     []int // channels per level, the last one the bottleneck
	BlockDepth int   // residual blocks per level
	EmbedDims  int   // sinusoidal embedding size (half sines, half cosines)
}

// DefaultConfig is docs/design.md's network: 1,950,659 parameters.
func DefaultConfig() Config {
	return Config{Widths: []int{32, 64, 96, 128}, BlockDepth: 2, EmbedDims: 32}
}

// Describe names the network a run trains on images of side imageSize,
// with params parameters, in words a person can compare: "image_size=128
// widths=[32 64 96 128] block_depth=2 embed_dims=32 params=1950659". A
// coordinator and its workers must build the same one.
func (c Config) Describe(imageSize, params int) string {
	return fmt.Sprintf("image_size=%d widths=%v block_depth=%d embed_dims=%d params=%d", imageSize, c.Widths, c.BlockDepth, c.EmbedDims, params)
}

// Validate reports a configuration the network cannot be built from.
func (c Config) Validate() error {
	if len(c.Widths) < 2 {
		return fmt.Errorf("widths %v: need at least two levels", c.Widths)
	}
	for _, w := range c.Widths {
		if w < 1 {
			return fmt.Errorf("widths %v: every width must be positive", c.Widths)
		}
	}
	if c.BlockDepth < 1 {
		return fmt.Errorf("block_depth %d: must be at least 1", c.BlockDepth)
	}
	if c.EmbedDims < 2 || c.EmbedDims%2 != 0 {
		return fmt.Errorf("embedding dims %d: must be even and at least 2", c.EmbedDims)
	}
	return nil
}

// PixelToUnit maps an 8-bit level to the network's range [−1, 1] as
// v/127.5 − 1: 0 → −1, 255 → 1.
func PixelToUnit(v uint8) float32 { return float32(v)/127.5 - 1 }

// UnitToPixel is PixelToUnit's inverse: v maps to the 8-bit level
// floor((v+1)·127.5 + 0.5), rounding half up, so −1 → 0, 0 → 128 and
// 1 → 255. Values outside [−1, 1] are clipped and NaN maps to 0.
func UnitToPixel(v float32) uint8 {
	x := (float64(v) + 1) * 127.5
	switch {
	case !(x > 0): // also NaN
		return 0
	case x >= 255:
		return 255
	}
	return uint8(math.Floor(x + 0.5))
}
