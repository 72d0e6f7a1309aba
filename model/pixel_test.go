package model

import (
	"math"
	"testing"
)

func TestPixelRoundTrip(t *testing.T) {
	for l := range 256 {
		u := PixelToUnit(uint8(l))
		if u < -1 || u > 1 {
			t.Fatalf("PixelToUnit(%d) = %v, outside [-1, 1]", l, u)
		}
		if got := UnitToPixel(u); got != uint8(l) {
			t.Fatalf("UnitToPixel(PixelToUnit(%d)) = %d", l, got)
		}
	}
	if PixelToUnit(0) != -1 || PixelToUnit(255) != 1 {
		t.Fatalf("ends: %v, %v", PixelToUnit(0), PixelToUnit(255))
	}
}

func TestUnitToPixel(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    float32
		want uint8
	}{
		{"-1", -1, 0},
		{"0", 0, 128}, // level 127.5, the one half level a float32 holds exactly, rounds up
		{"just below 0", -1e-7, 127},
		{"1", 1, 255},
		{"below -1", -1.5, 0},
		{"far below", -1e30, 0},
		{"above 1", 1.001, 255},
		{"far above", 1e30, 255},
		{"-inf", float32(math.Inf(-1)), 0},
		{"+inf", float32(math.Inf(1)), 255},
		{"NaN", float32(math.NaN()), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := UnitToPixel(tc.v); got != tc.want {
				t.Fatalf("UnitToPixel(%v) = %d, want %d", tc.v, got, tc.want)
			}
		})
	}
}

// TestUnitToPixelHalfLevels checks that every level l ends at l + 0.5: the
// float32 values nearest that point on either side map to l and l+1, and
// values a hundredth of a level inside map to the nearer level.
func TestUnitToPixelHalfLevels(t *testing.T) {
	unit := func(level float64) float32 { return float32(level/127.5 - 1) }
	level := func(v float32) float64 { return (float64(v) + 1) * 127.5 }
	for l := range 255 {
		mid := float64(l) + 0.5
		if got := UnitToPixel(unit(mid - 0.01)); got != uint8(l) {
			t.Fatalf("level %.2f maps to %d, want %d", mid-0.01, got, l)
		}
		if got := UnitToPixel(unit(mid + 0.01)); got != uint8(l+1) {
			t.Fatalf("level %.2f maps to %d, want %d", mid+0.01, got, l+1)
		}
		if l == 127 {
			continue // level 127.5 is v = 0 exactly: the cases above
		}
		// hi: the least float32 at or above the half level, a few steps
		// from the nearest
		hi := unit(mid)
		for level(hi) < mid {
			hi = math.Nextafter32(hi, 2)
		}
		for lo := math.Nextafter32(hi, -2); level(lo) >= mid; lo = math.Nextafter32(lo, -2) {
			hi = lo
		}
		lo := math.Nextafter32(hi, -2)
		if got := UnitToPixel(hi); got != uint8(l+1) {
			t.Fatalf("%v (level %v) maps to %d, want %d", hi, level(hi), got, l+1)
		}
		if got := UnitToPixel(lo); got != uint8(l) {
			t.Fatalf("%v (level %v) maps to %d, want %d", lo, level(lo), got, l)
		}
	}
}
