package track

import (
	"io"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	r.Gauge("tinct_loss", "last step's loss").Set(0.25)
	c := r.Counter("tinct_steps_total", "steps committed")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Add(1)
			}
		}()
	}
	wg.Wait()
	r.Gauge("tinct_nan", "x").Set(math.NaN())
	if r.Gauge("tinct_loss", "again") != r.Gauge("tinct_loss", "") {
		t.Fatal("a second Gauge call made another metric")
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	want := "# HELP tinct_loss last step's loss\n# TYPE tinct_loss gauge\ntinct_loss 0.25\n" +
		"# HELP tinct_nan x\n# TYPE tinct_nan gauge\ntinct_nan NaN\n" +
		"# HELP tinct_steps_total steps committed\n# TYPE tinct_steps_total counter\ntinct_steps_total 800\n"
	if string(body) != want {
		t.Fatalf("exposition:\n%s\nwant:\n%s", body, want)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
}
