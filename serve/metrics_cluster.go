package serve

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// MetricsCluster attaches the dashboard to a running trainer through its
// Prometheus endpoint (tinct train metrics_addr=…): it reads the
// coordinator's tinct_* gauges from URL (e.g. http://127.0.0.1:9464/metrics).
// It knows the number of workers, not each one; the cluster's own status
// API will list them.
type MetricsCluster struct {
	URL    string
	Client *http.Client // nil: http.DefaultClient
}

// ClusterStatus fetches and parses the metrics.
func (m MetricsCluster) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	st := ClusterStatus{Workers: []WorkerStatus{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL, nil)
	if err != nil {
		return st, err
	}
	client := m.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		st.Message = fmt.Sprintf("coordinator metrics at %s unreachable (is the trainer running, with metrics_addr set?)", m.URL)
		return st, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		st.Message = fmt.Sprintf("coordinator metrics at %s answered %s", m.URL, resp.Status)
		return st, nil
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "tinct_") {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			vals[name] = f
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("read coordinator metrics: %w", err)
	}
	if _, ok := vals["tinct_step"]; !ok {
		st.Message = fmt.Sprintf("%s has no tinct_step: not a tinct trainer's metrics", m.URL)
		return st, nil
	}
	if u, err := url.Parse(m.URL); err == nil {
		st.Coordinator = u.Host
	}
	st.Attached = true
	st.Epoch = int(vals["tinct_epoch"])
	st.Step = int64(vals["tinct_step"])
	st.WorkerCount = int(vals["tinct_workers"])
	st.ImagesPerSec = vals["tinct_images_per_second"]
	st.Message = fmt.Sprintf("Training: loss %.4g, %.1f images/s.", vals["tinct_loss"], st.ImagesPerSec)
	return st, nil
}
