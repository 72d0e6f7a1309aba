package model

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tinct/tinct/nn"
)

// timed wraps a Compute and adds up the wall time of each operation.
type timed struct {
	nn.Compute
	t map[string]time.Duration
}

func (c *timed) add(op string, start time.Time) { c.t[op] += time.Since(start) }

func convName(cv *nn.Conv2D) string { return fmt.Sprintf("conv%dx%d", cv.K, cv.K) }

func (c *timed) ConvForward(cv *nn.Conv2D, x, y nn.Tensor, acc bool) {
	defer c.add(convName(cv)+" forward", time.Now())
	c.Compute.ConvForward(cv, x, y, acc)
}
func (c *timed) ConvBackward(cv *nn.Conv2D, x, dy, dx nn.Tensor, acc bool) {
	defer c.add(convName(cv)+" backward", time.Now())
	c.Compute.ConvBackward(cv, x, dy, dx, acc)
}
func (c *timed) BatchNormForward(bn *nn.BatchNorm, x, y nn.Tensor, train bool) {
	defer c.add("batchnorm forward", time.Now())
	c.Compute.BatchNormForward(bn, x, y, train)
}
func (c *timed) BatchNormApply(bn *nn.BatchNorm, x, y nn.Tensor) {
	defer c.add("batchnorm apply (backward)", time.Now())
	c.Compute.BatchNormApply(bn, x, y)
}
func (c *timed) BatchNormBackward(bn *nn.BatchNorm, x, dy, dx nn.Tensor, acc bool) {
	defer c.add("batchnorm backward", time.Now())
	c.Compute.BatchNormBackward(bn, x, dy, dx, acc)
}
func (c *timed) SiLUForwardSave(x, y nn.Tensor) {
	defer c.add("silu", time.Now())
	c.Compute.SiLUForwardSave(x, y)
}
func (c *timed) SiLUBackwardSaved(s, y, dy, dx nn.Tensor) {
	defer c.add("silu", time.Now())
	c.Compute.SiLUBackwardSaved(s, y, dy, dx)
}
func (c *timed) AvgPool2Forward(x, y nn.Tensor) {
	defer c.add("pool, upsample", time.Now())
	c.Compute.AvgPool2Forward(x, y)
}
func (c *timed) AvgPool2Backward(dy, dx nn.Tensor) {
	defer c.add("pool, upsample", time.Now())
	c.Compute.AvgPool2Backward(dy, dx)
}
func (c *timed) Upsample2Forward(x, y nn.Tensor) {
	defer c.add("pool, upsample", time.Now())
	c.Compute.Upsample2Forward(x, y)
}
func (c *timed) Upsample2Backward(dy, dx nn.Tensor) {
	defer c.add("pool, upsample", time.Now())
	c.Compute.Upsample2Backward(dy, dx)
}
func (c *timed) Add(src, dst nn.Tensor) {
	defer c.add("add, mse", time.Now())
	c.Compute.Add(src, dst)
}
func (c *timed) MSE(p, t, g nn.Tensor, scale float32) float32 {
	defer c.add("add, mse", time.Now())
	return c.Compute.MSE(p, t, g, scale)
}

// BenchmarkStepOps times a 128² training step (batch $TINCT_BENCH_BATCH,
// default 8) on the backend $TINCT_BACKEND names and logs where the time
// goes, op by op (run with -v).
func BenchmarkStepOps(b *testing.B) {
	n := 8
	if v, err := fmt.Sscan(os.Getenv("TINCT_BENCH_BATCH"), &n); err != nil || v != 1 {
		n = 8
	}
	be, err := nn.NewCompute("")
	if err != nil {
		b.Log(err)
	}
	tc := &timed{Compute: be, t: map[string]time.Duration{}}
	u, _ := New(DefaultConfig())
	rng := rand.New(rand.NewPCG(1, 1))
	u.Init(rng)
	ar, err := u.NewArenaOn(tc, n, 128, 128)
	if err != nil {
		b.Fatal(err)
	}
	x, noise := nn.NewTensor(n, 4, 128, 128), nn.NewTensor(n, 3, 128, 128)
	nv := make([]float32, n)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	u.TrainStep(ar, x, nv, noise, 1, nil)
	clear(tc.t)
	b.ResetTimer()
	for range b.N {
		u.TrainStep(ar, x, nv, noise, 1, nil)
	}
	total := b.Elapsed()
	var names []string
	var ops time.Duration
	for k, v := range tc.t {
		names = append(names, k)
		ops += v
	}
	sort.Slice(names, func(i, j int) bool { return tc.t[names[i]] > tc.t[names[j]] })
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s, batch %d: %.1f ms per step\n", be.Name(), n, float64(total.Milliseconds())/float64(b.N))
	for _, k := range names {
		fmt.Fprintf(&sb, "  %-28s %7.1f ms  %4.1f%%\n", k, float64(tc.t[k].Microseconds())/1e3/float64(b.N), 100*float64(tc.t[k])/float64(total))
	}
	fmt.Fprintf(&sb, "  %-28s %7.1f ms  %4.1f%%", "rest (step, clear, copies)", float64((total-ops).Microseconds())/1e3/float64(b.N), 100*float64(total-ops)/float64(total))
	b.Log(sb.String())
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/step")
}
