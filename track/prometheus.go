package track

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
)

// Registry holds gauges and counters and serves them in the Prometheus text
// exposition format (version 0.0.4), without a client library.
type Registry struct {
	mu      sync.Mutex
	metrics map[string]*Metric
}

// Metric is one named value: a gauge, or a counter that only grows.
type Metric struct {
	name, help, kind string
	bits             atomic.Uint64
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{metrics: map[string]*Metric{}} }

// Gauge returns the gauge called name, creating it.
func (r *Registry) Gauge(name, help string) *Metric { return r.metric(name, help, "gauge") }

// Counter returns the counter called name, creating it.
func (r *Registry) Counter(name, help string) *Metric { return r.metric(name, help, "counter") }

func (r *Registry) metric(name, help, kind string) *Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.metrics[name]; ok {
		return m
	}
	m := &Metric{name: name, help: help, kind: kind}
	r.metrics[name] = m
	return m
}

// Set sets the value.
func (m *Metric) Set(v float64) { m.bits.Store(math.Float64bits(v)) }

// Add adds d to the value.
func (m *Metric) Add(d float64) {
	for {
		old := m.bits.Load()
		if m.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Value reads the value.
func (m *Metric) Value() float64 { return math.Float64frombits(m.bits.Load()) }

// ServeHTTP writes every metric, sorted by name.
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	names := make([]string, 0, len(r.metrics))
	for n := range r.metrics {
		names = append(names, n)
	}
	r.mu.Unlock()
	sort.Strings(names)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	for _, n := range names {
		r.mu.Lock()
		m := r.metrics[n]
		r.mu.Unlock()
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", m.name, m.help, m.name, m.kind, m.name, formatValue(m.Value()))
	}
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return fmt.Sprintf("%g", v)
}
