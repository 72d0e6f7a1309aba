package cluster

import (
	"bytes"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Junk reports traffic on a cluster port that is not the cluster's —
// failed handshakes, garbage, strangers — at most once per Every, with a
// count of what was left unsaid in between, so that a flood cannot flood
// the log too.
type Junk struct {
	Log   *slog.Logger
	Port  string        // what the port is, e.g. "coordinator gRPC 10.0.0.1:7070"
	Every time.Duration // default 10 s
	Msg   string        // the log message; default "junk on a cluster port"

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Report notes one piece of junk from from.
func (j *Junk) Report(from, what string) {
	j.mu.Lock()
	every := j.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	now := time.Now()
	if !j.last.IsZero() && now.Sub(j.last) < every {
		j.suppressed++
		j.mu.Unlock()
		return
	}
	n := j.suppressed
	j.last, j.suppressed = now, 0
	j.mu.Unlock()
	log := j.Log
	if log == nil {
		log = slog.Default()
	}
	msg := j.Msg
	if msg == "" {
		msg = "junk on a cluster port"
	}
	args := []any{"port", j.Port}
	if from != "" {
		args = append(args, "from", from)
	}
	log.Warn(msg, append(args, "what", what, "more_since_last_report", n)...)
}

// http2Preface is what every HTTP/2 (gRPC) client sends first.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// WatchPreface wraps a plaintext gRPC listener so that a connection whose
// first bytes are not the HTTP/2 preface is reported to junk (gRPC itself
// closes it without a word).
func WatchPreface(l net.Listener, junk *Junk) net.Listener {
	return &prefaceListener{Listener: l, junk: junk}
}

type prefaceListener struct {
	net.Listener
	junk *Junk
}

func (l *prefaceListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &prefaceConn{Conn: c, junk: l.junk}, nil
}

type prefaceConn struct {
	net.Conn
	junk *Junk
	seen []byte // the first bytes, until they are the whole preface
	done bool
}

func (c *prefaceConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && n > 0 {
		c.seen = append(c.seen, p[:min(n, len(http2Preface)-len(c.seen))]...)
		if !bytes.HasPrefix(http2Preface, c.seen) {
			c.done = true
			c.junk.Report(c.RemoteAddr().String(), "not HTTP/2 (gRPC): the connection is dropped")
		} else if len(c.seen) == len(http2Preface) {
			c.done, c.seen = true, nil
		}
	}
	return n, err
}
