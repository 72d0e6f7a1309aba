package model

import "github.com/tinct/tinct/internal/modelspec"

// PixelToUnit maps an 8-bit level to the network's range [−1, 1] as
// v/127.5 − 1: 0 → −1, 255 → 1 (modelspec.PixelToUnit).
func PixelToUnit(v uint8) float32 { return modelspec.PixelToUnit(v) }

// UnitToPixel is PixelToUnit's inverse: v maps to the 8-bit level
// floor((v+1)·127.5 + 0.5), rounding half up, so −1 → 0, 0 → 128 and
// 1 → 255. Values outside [−1, 1] are clipped and NaN maps to 0
// (modelspec.UnitToPixel).
func UnitToPixel(v float32) uint8 { return modelspec.UnitToPixel(v) }
