package serve

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tinct/tinct/track"
)

func TestMetricsCluster(t *testing.T) {
	reg := track.NewRegistry()
	reg.Gauge("tinct_step", "").Set(120)
	reg.Gauge("tinct_epoch", "").Set(6)
	reg.Gauge("tinct_workers", "").Set(2)
	reg.Gauge("tinct_loss", "").Set(0.031)
	reg.Gauge("tinct_images_per_second", "").Set(37.5)
	srv := httptest.NewServer(reg)
	defer srv.Close()
	st, err := MetricsCluster{URL: srv.URL + "/metrics"}.ClusterStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Attached || st.Step != 120 || st.Epoch != 6 || st.WorkerCount != 2 || st.ImagesPerSec != 37.5 || !strings.Contains(st.Message, "0.031") {
		t.Fatalf("status %+v", st)
	}
	// not a trainer, and unreachable: not attached, with a reason
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("up 1\n")) }))
	defer other.Close()
	for _, u := range []string{other.URL, "http://127.0.0.1:1/metrics"} {
		st, err := MetricsCluster{URL: u}.ClusterStatus(context.Background())
		if err != nil || st.Attached || st.Message == "" {
			t.Fatalf("%s: %+v %v", u, st, err)
		}
	}
}
