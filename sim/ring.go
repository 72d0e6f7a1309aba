package sim

import "time"

// Link is one node's network path as the model sees it.
type Link struct {
	// Bandwidth of the link, bytes per second (each direction).
	Bandwidth float64
	// StreamRate caps one stream's throughput, bytes per second, whatever
	// the link: the end hosts' work per byte (gRPC framing, copies, TLS,
	// the ring's additions). 0: no cap.
	StreamRate float64
	// Latency is one hop's one-way delay from a send to the receiver
	// acting on it: the wire and, mostly, the software path (gRPC, the
	// kernel, goroutine wake-ups). It does not occupy the link.
	Latency time.Duration
	// Overhead is the sender's fixed cost of one message (one ring chunk,
	// one report, one task), during which its stream sends nothing else.
	Overhead time.Duration
}

// Rate is the bytes per second one stream gets.
func (l Link) Rate() float64 {
	if l.StreamRate > 0 && l.StreamRate < l.Bandwidth {
		return l.StreamRate
	}
	return l.Bandwidth
}

// Send is the time to move one message of b bytes over the link,
// latency included.
func (l Link) Send(b float64) time.Duration {
	return l.Overhead + l.Latency + seconds(b/l.Rate())
}

func seconds(s float64) time.Duration { return time.Duration(s * 1e9) }

// RingTime is the duration of one ring all-reduce of n float32 over size
// ranks as package allreduce runs it: 2(size−1) phases (reduce-scatter then
// all-gather); in each a rank sends one segment (n/size values, rounded up)
// to the next rank, cut into chunks of chunkBytes, and forwards a chunk as
// soon as it has received (and added) the one it depends on. A chunk takes
// Overhead + bytes/Rate on the sender's link and Latency to arrive; the
// link sends in phase order. Every rank is alike, so one rank's schedule
// is the ring's:
//
//	send(p, j) = max(link free, arrival of (p−1, j)); arrival = send + Overhead + bytes/Rate + Latency
//
// For large vectors this is 2(size−1)/size · n·4 / Rate plus the pipeline's
// fill; for small ones 2(size−1) · (Overhead + Latency).
func RingTime(n, size, chunkBytes int, l Link) time.Duration {
	if size <= 1 || n <= 0 {
		return 0
	}
	seg := (n + size - 1) / size
	segBytes := 4 * seg
	k := max(1, (segBytes+chunkBytes-1)/chunkBytes)
	per := l.Overhead.Seconds() + float64(segBytes)/float64(k)/l.Rate()
	lat := l.Latency.Seconds()
	phases := 2 * (size - 1)
	// prev[j]: arrival of chunk j of the previous phase at this rank
	prev := make([]float64, k)
	cur := make([]float64, k)
	free := 0.0
	for p := 0; p < phases; p++ {
		for j := range k {
			start := free
			if p > 0 && prev[j] > start {
				start = prev[j]
			}
			free = start + per
			cur[j] = free + lat
		}
		prev, cur = cur, prev
	}
	return seconds(prev[k-1])
}
