package serve

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/tinct/tinct/colorize"
)

// Defaults of the results kept for full-resolution downloads.
const (
	DefaultMaxResultBytes = 256 << 20 // the photos' luminance planes and the samples
	resultTTL             = time.Hour
)

// result is a finished colorization kept so that its full-resolution
// images can be made when asked for: the photo's luminance at its own size
// and the network's model-size samples of the whole frame.
type result struct {
	*colorize.Result
	id      string
	created time.Time
}

func (r *result) bytes() int64 {
	n := int64(len(r.Lum.Pix))
	for _, s := range r.Samples {
		n += int64(len(s.Pix))
	}
	return n
}

// results keeps the newest results up to a total size, each for at most an
// hour. Their IDs are random (128 bits): a result's URL is its only key.
type results struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	list  []*result // oldest first
	now   func() time.Time
}

func newResults(max int64) *results { return &results{max: max, now: time.Now} }

// add keeps r (dropping the oldest results to make room) and returns its ID.
func (rs *results) add(r *result) string {
	var b [16]byte
	rand.Read(b[:])
	r.id = hex.EncodeToString(b[:])
	r.created = rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.list = append(rs.list, r)
	rs.bytes += r.bytes()
	rs.expire()
	for rs.bytes > rs.max && len(rs.list) > 1 {
		rs.drop()
	}
	return r.id
}

// get returns the result with that ID, or nil.
func (rs *results) get(id string) *result {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.expire()
	for _, r := range rs.list {
		if r.id == id {
			return r
		}
	}
	return nil
}

func (rs *results) expire() {
	for len(rs.list) > 0 && rs.now().Sub(rs.list[0].created) > resultTTL {
		rs.drop()
	}
}

func (rs *results) drop() {
	rs.bytes -= rs.list[0].bytes()
	rs.list[0] = nil
	rs.list = rs.list[1:]
}

// resultFile is what /api/results/{id}/{file} serves: "K.png", K from 1.
var resultFile = regexp.MustCompile(`^([1-9][0-9]?)\.png$`)

// resultURL is the full-resolution image of sample k (from 0) of a result.
func resultURL(id string, k int) string { return fmt.Sprintf("/api/results/%s/%d.png", id, k+1) }

// handleResult answers GET /api/results/{id}/{k}.png with sample k of a
// kept result at the photo's own size: the sample's chroma on the photo's
// luminance (chroma.Transfer). It is made when asked, one of maxDecodes at
// a time, and streamed: it is encoded row by row (pngStream), so that even
// a 50-megapixel result takes a few megabytes while it is sent.
func (s *Server) handleResult(w http.ResponseWriter, r *http.Request) {
	gone := &apiError{status: http.StatusNotFound, msg: fmt.Sprintf(
		"this result is no longer kept (the server keeps the newest %d MiB of results, each for an hour); colorize again", s.opts.MaxResultBytes>>20)}
	m := resultFile.FindStringSubmatch(r.PathValue("file"))
	res := s.results.get(r.PathValue("id"))
	if m == nil || res == nil {
		writeError(w, gone)
		return
	}
	k, _ := strconv.Atoi(m[1])
	if k > len(res.Samples) {
		writeError(w, gone)
		return
	}
	select {
	case s.decode <- struct{}{}:
		defer func() { <-s.decode }()
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "private, max-age=3600, immutable")
	b := res.Lum.Bounds()
	ps, err := newPNGStream(w, b.Dx(), b.Dy())
	if err == nil {
		err = res.FullRows(k-1, func(_ int, rgb []uint8) error { return ps.writeRow(rgb) })
	}
	if err == nil {
		err = ps.close()
	}
	if err != nil {
		s.log.Debug("result not sent", "err", err) // the client went away
	}
}

// keptBytes is what the kept results hold, which the memory budget counts.
func (rs *results) keptBytes() int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.bytes
}

// evictOldest drops the oldest kept result for the memory budget and
// returns its bytes (0: none is kept).
func (rs *results) evictOldest() int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.list) == 0 {
		return 0
	}
	n := rs.list[0].bytes()
	rs.drop()
	return n
}
