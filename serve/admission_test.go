package serve

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fromAddr returns an HTTP client whose connections come from the loopback
// address ip (on Linux every 127.0.0.0/8 address is this machine's), so
// that the server sees it as its own client.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// dialFrom opens a connection to the server from the loopback address ip.
func dialFrom(t *testing.T, serverURL, ip string) (net.Conn, error) {
	u, _ := url.Parse(serverURL)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", u.Host)
}

// restall is a slow-body attacker: from address ip it sends an upload's
// headers (a body of a megabyte declared) and then nothing, or (rate > 0)
// a body trickling in bursts at about rate bytes a second; whenever the
// server answers (408) or closes, it connects again at once, until ctx
// ends. It counts the answers by status.
func restall(ctx context.Context, t *testing.T, serverURL, ip string, rate int, answers *statusCount) {
	u, _ := url.Parse(serverURL)
	for ctx.Err() == nil {
		c, err := dialFrom(t, serverURL, ip)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		fmt.Fprintf(c, "POST /api/colorize HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 1000000\r\n\r\n", u.Host)
		if rate > 0 {
			fmt.Fprint(c, "--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n")
			go func() { // bursts of a fifth of a second's worth, five a second
				for ctx.Err() == nil {
					if _, err := c.Write(bytes.Repeat([]byte{'x'}, rate/5)); err != nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}
		status := 0
		if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			status = res.StatusCode
		}
		stop()
		c.Close()
		if ctx.Err() == nil {
			answers.add(status)
		}
	}
}

// statusCount counts answers by status.
type statusCount struct {
	mu sync.Mutex
	n  map[int]int
}

func (c *statusCount) add(status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[int]int{}
	}
	c.n[status]++
}

func (c *statusCount) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.n)
}

// TestFairAdmission: uploads that stall, and reconnect after each 408 to
// stall again, hold at most their share of the queue's places: a normal
// user (from another address) gets every colorization through within its
// own run time plus the deadline of a stalled upload, and none is refused.
// The attack (five clients for 60 s at a 15 s deadline; go run
// ./bench/serveprobe --probes restall runs it in full) is scaled down
// here: 3 s at a 0.5 s deadline.
func TestFairAdmission(t *testing.T) {
	const (
		deadline = 500 * time.Millisecond // BodyTimeout: the longest a stalled upload holds its place
		period   = 3 * time.Second
		slack    = 750 * time.Millisecond // scheduling on a busy machine
		rate     = 4 << 10                // MinBodyRate
	)
	for _, c := range []struct {
		name  string
		ips   []string // one attacker per entry
		burst bool     // send bursts just above the minimum rate instead of nothing
	}{
		{"five addresses re-stalling", []string{"127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"}, false},
		{"ten connections from one address re-stalling", []string{"127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.21"}, false},
		{"five connections from one address in bursts above the minimum rate", []string{"127.0.0.31", "127.0.0.31", "127.0.0.31", "127.0.0.31", "127.0.0.31"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, ts := newTestServer(t, Options{Queue: 4, BodyTimeout: deadline, MinBodyRate: rate})
			user := fromAddr("127.0.0.100")
			body, ct := form(t, encodePNG(t, photo(20, 20)), "steps", "10", "samples", "1")
			colorize := func() (int, time.Duration, string) {
				start := time.Now()
				res, err := user.Post(ts.URL+"/api/colorize", ct, bytes.NewReader(body))
				if err != nil {
					return 0, time.Since(start), err.Error()
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == 200 && !bytes.Contains(b, []byte("event: done")) {
					return 0, time.Since(start), string(b)
				}
				return res.StatusCode, time.Since(start), strings.TrimSpace(string(b))
			}
			// its own run time, on the idle server
			if st, _, msg := colorize(); st != 200 {
				t.Fatalf("on the idle server: %d %s", st, msg)
			}
			var own time.Duration
			for range 3 {
				_, d, _ := colorize()
				own = max(own, d)
			}

			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var answers statusCount
			r := 0
			if c.burst {
				r = 2 * rate
			}
			for _, ip := range c.ips {
				wg.Go(func() { restall(ctx, t, ts.URL, ip, r, &answers) })
			}
			defer func() { cancel(); wg.Wait() }()
			time.Sleep(100 * time.Millisecond) // they take the places

			limit := own + deadline + slack
			n, worst := 0, time.Duration(0)
			for end := time.Now().Add(period); time.Now().Before(end); {
				st, d, msg := colorize()
				n++
				worst = max(worst, d)
				if st != 200 {
					t.Fatalf("colorization %d under attack: %d %.200s (after %v)", n, st, msg, d.Round(time.Millisecond))
				}
				if d > limit {
					t.Errorf("colorization %d under attack took %v, more than its own %v + the deadline %v (+ %v)", n, d.Round(time.Millisecond), own.Round(time.Millisecond), deadline, slack)
				}
			}
			cancel()
			wg.Wait()
			t.Logf("%d colorizations in %v, the slowest %v (own %v); the attackers' answers by status: %v", n, period, worst.Round(time.Millisecond), own.Round(time.Millisecond), &answers)
		})
	}
}

// TestAdmissionPlaces: the places' line is first come first served, a
// client waits for its own earlier request, and a wait ends with the
// errors the handlers answer 503 for.
func TestAdmissionPlaces(t *testing.T) {
	ctx := context.Background()
	p := newPlaces(2, 1)
	a, err := p.enter(ctx, "a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.enter(ctx, "b", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// full: c waits, then d; a's place goes to c, b's to d
	order := make(chan string, 2)
	var wg sync.WaitGroup
	for i, who := range []string{"c", "d"} {
		wg.Go(func() {
			pl, err := p.enter(ctx, who, 5*time.Second)
			if err != nil {
				t.Errorf("%s: %v", who, err)
				return
			}
			order <- who
			defer pl.leave()
			time.Sleep(50 * time.Millisecond)
		})
		for { // c is in line before d asks
			if _, w := p.inUse(); w == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	a.leave()
	if got := <-order; got != "c" {
		t.Errorf("first freed place went to %s, want c (first in line)", got)
	}
	b.leave()
	<-order
	wg.Wait()

	// a client's second request waits for its first; the wait ends
	a, _ = p.enter(ctx, "a", time.Second)
	if _, err := p.enter(ctx, "a", 50*time.Millisecond); err != errClientBusy {
		t.Errorf("a's second request: %v, want errClientBusy", err)
	}
	if _, err := p.enter(ctx, "a", -1); err != errClientBusy {
		t.Errorf("a's second request, no wait: %v, want errClientBusy", err)
	}
	a.unclaim() // running: a may send the next
	a2, err := p.enter(ctx, "a", time.Second)
	if err != nil {
		t.Fatalf("a's next request after the first runs: %v", err)
	}
	if _, err := p.enter(ctx, "e", 50*time.Millisecond); err != errPlacesFull {
		t.Errorf("a third request on two places: %v, want errPlacesFull", err)
	}
	a.leave()
	a2.leave()
	if held, waiting := p.inUse(); held != 0 || waiting != 0 {
		t.Errorf("after all left: %d held, %d waiting", held, waiting)
	}
}

// TestClientKey: a client is its connection's address (an IPv6 one's
// /64); forwarding headers are not trusted.
func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.5:1234":             "127.0.0.5",
		"[::ffff:10.0.0.1]:80":       "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:3::1]:443":      "2001:db8:1:3::/64",
		"not an address":             "not an address",
	} {
		r := &http.Request{RemoteAddr: addr, Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}}
		if got := clientKey(r); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", addr, got, want)
		}
	}
}
