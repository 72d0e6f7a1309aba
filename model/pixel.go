package model

import "math"

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
