package model

import "math"

// T is the number of discrete diffusion times used in training.
const T = 1000

// Offset cosine schedule: the signal rate runs from 0.95 at t=0 to 0.02 at t=1.
var (
	startAngle = math.Acos(0.95)
	endAngle   = math.Acos(0.02)
)

// Rates returns the signal and noise rates at diffusion time t ∈ [0,1]
// (signal² + noise² = 1).
func Rates(t float64) (signal, noise float64) {
	a := startAngle + t*(endAngle-startAngle)
	return math.Cos(a), math.Sin(a)
}

// RatesAt returns the rates of the discrete time i ∈ [0,T): t = i/T.
func RatesAt(i int) (signal, noise float64) { return Rates(float64(i) / T) }

// SamplerTimes returns the integer times a DDIM run of steps steps visits:
// linspace(T−1, 0, steps), rounded half to even, as NumPy does.
func SamplerTimes(steps int) []int {
	if steps < 1 {
		return nil
	}
	if steps == 1 {
		return []int{T - 1}
	}
	times := make([]int, steps)
	step := float64(-(T - 1)) / float64(steps-1)
	for k := range times {
		times[k] = int(math.RoundToEven(float64(T-1) + float64(k)*step))
	}
	times[steps-1] = 0
	return times
}
