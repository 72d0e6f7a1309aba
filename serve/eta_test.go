package serve

import (
	"testing"
	"time"
)

// TestJobTimes: the wait estimate is the mean of the recent colorizations'
// times for each one ahead, less what the running one has run; none before
// a colorization has finished; cancelled ones do not count.
func TestJobTimes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := &jobTimes{now: func() time.Time { return now }}
	if w := j.wait(1); w != nil {
		t.Errorf("estimate before any colorization: %v, want none", *w)
	}
	for _, d := range []time.Duration{2 * time.Second, 4 * time.Second} {
		b := j.start()
		now = now.Add(d)
		b.done()
		b.end()
	}
	b := j.start() // cancelled after 1 s: not counted
	now = now.Add(time.Second)
	b.end()
	if w := j.wait(2); w == nil || *w != 6 {
		t.Errorf("2 ahead, none running: %v, want 2 × 3 s", w)
	}
	b = j.start()
	now = now.Add(time.Second)
	if w := j.wait(3); w == nil || *w != 8 {
		t.Errorf("3 ahead, the running one 1 s in: %v, want 3 × 3 s − 1 s", w)
	}
	now = now.Add(10 * time.Second) // overrunning the mean
	if w := j.wait(1); w == nil || *w != 0 {
		t.Errorf("1 ahead, the running one past the mean: %v, want 0", w)
	}
	b.end()
	for range 2 * recentJobs {
		b := j.start()
		now = now.Add(time.Second)
		b.done()
		b.end()
	}
	if w := j.wait(1); w == nil || *w != 1 || len(j.recent) != recentJobs {
		t.Errorf("after many 1 s colorizations: %v (%d kept), want 1 s", w, len(j.recent))
	}
}
