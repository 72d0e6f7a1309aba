package serve

import (
	"context"
	"net/http"
	"time"
)

// ClusterStatus is the answer of GET /api/cluster: what the dashboard's
// cluster panel shows. Without a coordinator only Attached (false) and
// Message are set; the cluster work fills the rest.
type ClusterStatus struct {
	Attached    bool   `json:"attached"`
	Message     string `json:"message"`               // a line for people, e.g. "not attached to a coordinator"
	Coordinator string `json:"coordinator,omitempty"` // its address, host:port
	Epoch       int    `json:"epoch,omitempty"`       // the epoch in progress
	Step        int64  `json:"step,omitempty"`        // the last committed step
	// WorkerCount is the number of workers when they are not listed one by one.
	WorkerCount  int     `json:"worker_count,omitempty"`
	ImagesPerSec float64 `json:"images_per_sec,omitempty"`
	// Workers are the ring's members in ring order.
	Workers []WorkerStatus `json:"workers"`
}

// WorkerStatus is one worker of the cluster.
type WorkerStatus struct {
	ID           string    `json:"id"`
	Addr         string    `json:"addr"`
	Rank         int       `json:"rank"`
	State        string    `json:"state"` // e.g. "joining", "training", "suspect", "gone"
	Device       string    `json:"device,omitempty"`
	ImagesPerSec float64   `json:"images_per_sec,omitempty"`
	LastSeen     time.Time `json:"last_seen"`
}

// ClusterSource reports the cluster's state. The coordinator implements it
// when the cluster issue connects it to the dashboard.
type ClusterSource interface {
	ClusterStatus(ctx context.Context) (ClusterStatus, error)
}

// handleCluster answers GET /api/cluster with a ClusterStatus.
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	st := ClusterStatus{Message: "not attached to a coordinator", Workers: []WorkerStatus{}}
	if s.opts.Cluster != nil {
		var err error
		if st, err = s.opts.Cluster.ClusterStatus(r.Context()); err != nil {
			s.logError(r, err)
			writeError(w, err)
			return
		}
		if st.Workers == nil {
			st.Workers = []WorkerStatus{}
		}
	}
	writeJSON(w, http.StatusOK, st)
}
