package nn

import "testing"

// Fill must set every element, whatever the length: the doubling copies
// leave a tail that is not a power of two.
func TestFill(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 1000, 16384, 16389} {
		x := make([]float32, n+2)
		for i := range x {
			x[i] = -1
		}
		Fill(x[1:n+1], 2.5)
		for i, v := range x {
			want := float32(2.5)
			if i == 0 || i == n+1 {
				want = -1 // outside the slice: untouched
			}
			if v != want {
				t.Fatalf("n=%d: x[%d] = %v, want %v", n, i, v, want)
			}
		}
	}
}

func BenchmarkFill(b *testing.B) {
	x := make([]float32, 128*128)
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		Fill(x, 1.5)
	}
}
