package nn

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// BenchmarkSgemmConcurrent measures conv-shaped products (64×16384×576)
// run on 1 and on 2 goroutines at once, per backend.
func BenchmarkSgemmConcurrent(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	m, n, k := 64, 16384, 576
	for _, name := range GEMMs() {
		be, err := UseGEMM(name)
		if err != nil {
			continue
		}
		for _, g := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", name, g), func(b *testing.B) {
				as, bs, cs := make([][]float32, g), make([][]float32, g), make([][]float32, g)
				for i := range g {
					as[i], bs[i], cs[i] = randSlice(rng, m*k, 1), randSlice(rng, k*n, 1), make([]float32, m*n)
				}
				b.ResetTimer()
				for range b.N {
					var wg sync.WaitGroup
					for i := range g {
						wg.Add(1)
						go func() {
							defer wg.Done()
							be.Sgemm(false, false, m, n, k, 1, as[i], k, bs[i], n, 0, cs[i], n)
						}()
					}
					wg.Wait()
				}
				b.ReportMetric(float64(g)*2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
	UseGEMM("auto")
}

// BenchmarkSgemmShapes measures single-goroutine products of the shapes a
// 3×3 convolution at 128² (64→32 channels) produces, for several tile widths.
func BenchmarkSgemmShapes(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	be := ActiveGEMM()
	for _, s := range []struct {
		name    string
		ta, tb  bool
		m, n, k int
	}{
		{"fwd_k192", false, false, 32, 896, 192},
		{"fwd_k96", false, false, 32, 896, 96},
		{"fwd64_k192", false, false, 64, 1024, 192},
		{"fwd96_k288", false, false, 96, 1024, 288},
		{"dWT_k896_m192", false, true, 192, 32, 896},
		{"fwd_n448", false, false, 32, 448, 576},
		{"fwd_n896", false, false, 32, 896, 576},
		{"fwd_n1792", false, false, 32, 1792, 576},
		{"fwd96_n896", false, false, 96, 896, 864},
		{"dW_k448", false, true, 32, 576, 448},
		{"dWT_k896", false, true, 576, 32, 896},
		{"fwd_n4096", false, false, 32, 4096, 576},
		{"fwd_n16384", false, false, 32, 16384, 576},
		{"fwdT_n4096", false, false, 4096, 32, 576},
		{"dW_k896", false, true, 32, 576, 896},
		{"dW_k4096", false, true, 32, 576, 4096},
		{"dW_k16384", false, true, 32, 576, 16384},
		{"dx_n4096", false, false, 64, 4096, 288},
		{"dx_n16384", false, false, 64, 16384, 288},
	} {
		b.Run(s.name, func(b *testing.B) {
			a, bb, c := randSlice(rng, s.m*s.k, 1), randSlice(rng, s.k*s.n, 1), make([]float32, s.m*s.n)
			lda, ldb := s.k, s.n
			if s.tb {
				ldb = s.k
			}
			for range b.N {
				be.Sgemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n)
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkUpsample2Forward is the ×2 upsample into the U-Net's largest
// concatenation at 128², batch 1: 64 channels of 64×64 to 128×128.
func BenchmarkUpsample2Forward(b *testing.B) {
	x, y := NewTensor(1, 64, 64, 64), NewTensor(1, 64, 128, 128)
	for i := range x.Data {
		x.Data[i] = float32(i%13) * 0.1
	}
	b.SetBytes(int64(4 * len(y.Data)))
	for b.Loop() {
		Upsample2Forward(x, y)
	}
}
