package serve

import (
	"sync"
	"time"
)

// recentJobs is how many finished colorizations the wait estimate averages.
const recentJobs = 8

// jobTimes keeps how long the recent colorizations held the run slot, to
// tell a waiting request about how long it will wait (the "queued" event's
// wait_seconds). The zero value is ready to use.
type jobTimes struct {
	mu      sync.Mutex
	recent  []time.Duration // the last recentJobs, oldest first
	running time.Time       // when the running colorization took the slot; zero when none runs
	now     func() time.Time
}

// job is a colorization holding the run slot.
type job struct {
	j     *jobTimes
	start time.Time
	ok    bool
}

func (j *jobTimes) clock() time.Time {
	if j.now != nil {
		return j.now()
	}
	return time.Now()
}

// start records that a colorization took the run slot. Call done when it
// has finished (its time then counts towards the estimate) and end when it
// leaves the slot, finished or not.
func (j *jobTimes) start() *job {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running = j.clock()
	return &job{j: j, start: j.running}
}

func (b *job) done() { b.ok = true }

func (b *job) end() {
	j := b.j
	j.mu.Lock()
	defer j.mu.Unlock()
	if b.ok {
		j.recent = append(j.recent, j.clock().Sub(b.start))
		if len(j.recent) > recentJobs {
			j.recent = j.recent[1:]
		}
	}
	if j.running.Equal(b.start) {
		j.running = time.Time{}
	}
}

// wait estimates how many seconds a request with ahead colorizations
// before it (the running one included) waits for the run slot: the
// running one's mean time less what it has run, and the mean for each of
// the others. It is nil until a colorization has finished.
func (j *jobTimes) wait(ahead int) *float64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.recent) == 0 || ahead < 1 {
		return nil
	}
	var sum time.Duration
	for _, d := range j.recent {
		sum += d
	}
	mean := sum / time.Duration(len(j.recent))
	left := mean * time.Duration(ahead)
	if !j.running.IsZero() {
		left -= min(j.clock().Sub(j.running), mean)
	}
	s := left.Seconds()
	return &s
}
