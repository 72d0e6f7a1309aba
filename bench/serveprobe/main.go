// Command serveprobe measures the peak memory (VmHWM, the resident set's
// high-water mark) of a real tinct serve process under the hostile loads of
// issues 10 and 24, one fresh server per probe, and its resident size
// after idling:
//
//	idle        one gray preview of a small photo
//	gray30      30 parallel 19 MB uploads to /api/gray
//	colorize30  30 parallel 19 MB uploads to /api/colorize (10 steps), then the full-resolution result of each admitted one
//	png16       4 parallel 16-bit 7000×7000 PNGs (381 KB each, 392 MB decoded) to /api/gray
//	slowbody    5 stalled uploads to /api/colorize and 30 to /api/gray (headers and a part header, then nothing),
//	            while a normal colorization is retried every 0.5 s until it gets through
//	fullres     one 7000×7000 photo colorized, then its full-resolution PNG fetched 8 times in parallel
//	zeros       one 7000×7000 8-bit RGB PNG of zeros (143 KB; 196 MB decoded) to /api/gray
//	zeros6      the same with an eXIf orientation 6 (turned upright: a rotated copy)
//	zeros4      4 parallel zeros to /api/gray
//	flood       30 zeros to /api/gray and 30 to /api/colorize in parallel, while an ordinary user
//	            previews and colorizes a small photo in a loop; then two more ordinary requests
//	restall     5 clients send an upload's headers (Content-Length 1000000) and no body, and reconnect
//	            after each 408, for --restall (60 s), while an ordinary user colorizes in a loop
//
// Every request of a probe comes from its own loopback address (127.0.0.X:
// the server's limit per client counts them apart), the ordinary user's
// from 127.0.0.2. After each probe the server idles for --idle (30 s) and
// its resident size is read again (and when it first was under 150 MiB).
//
// Usage (Linux: it reads /proc/PID/status):
//
//	go build -o /tmp/tinct ./cmd/tinct && go run ./bench/serveprobe --tinct /tmp/tinct [--probes zeros,flood] [--idle 30s]
//
// Without --store it makes a checkpoint of a small random network at 64²
// (widths 16,32) in a temporary directory. --serve-args passes more flags
// to tinct serve (e.g. "--memory-budget 192"). It prints one line per
// probe.
package main

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"log"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/model"
)

func main() {
	tinct := flag.String("tinct", "", "the tinct binary to measure (required)")
	store := flag.String("store", "", "checkpoint store (default: a random 64² network made here)")
	probes := flag.String("probes", "idle,gray30,colorize30,png16,slowbody,fullres,zeros,zeros6,zeros4,flood,restall", "probes to run, comma-separated")
	idle := flag.Duration("idle", 30*time.Second, "how long the server idles after each probe before its resident size is read again (0: not at all)")
	restall := flag.Duration("restall", 60*time.Second, "how long the restall probe's attack lasts")
	serveArgs := flag.String("serve-args", "", "more flags for tinct serve, space-separated")
	flag.Parse()
	if *tinct == "" {
		log.Fatal("give --tinct PATH (go build -o /tmp/tinct ./cmd/tinct)")
	}
	tmp, err := os.MkdirTemp("", "serveprobe")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if *store == "" {
		*store = filepath.Join(tmp, "checkpoints")
		if err := makeCheckpoint(*store); err != nil {
			log.Fatal(err)
		}
	}
	p := &prober{tinct: *tinct, store: *store, dir: tmp, idleFor: *idle, restallFor: *restall, serveArgs: strings.Fields(*serveArgs)}
	for _, name := range strings.Split(*probes, ",") {
		fn, ok := map[string]func(string) string{
			"idle": p.idle, "gray30": p.gray30, "colorize30": p.colorize30, "png16": p.png16, "slowbody": p.slowbody, "fullres": p.fullres,
			"zeros": p.zeros, "zeros6": p.zeros6, "zeros4": p.zeros4, "flood": p.flood, "restall": p.restall,
		}[name]
		if !ok {
			log.Fatalf("unknown probe %q", name)
		}
		p.run(name, fn)
	}
}

// makeCheckpoint saves a random network (64², widths 16,32) into dir.
func makeCheckpoint(dir string) error {
	cfg, err := config.Load("", []string{"image_size=64", "model.widths=[16,32]", "model.block_depth=1"})
	if err != nil {
		return err
	}
	net, err := model.New(cfg.ModelConfig())
	if err != nil {
		return err
	}
	net.Init(rand.New(rand.NewPCG(1, 2)))
	var ema bytes.Buffer
	if err := model.WriteSafetensors(&ema, net.StateDict(), nil); err != nil {
		return err
	}
	store, err := checkpoint.Open(dir)
	if err != nil {
		return err
	}
	return store.Save(context.Background(), &checkpoint.Checkpoint{Name: "epoch-000001", Step: 10, Epoch: 1,
		Parts: map[string][]byte{"ema.safetensors": ema.Bytes(), "config.yaml": cfg.YAML()}})
}

type prober struct {
	tinct, store, dir string
	idleFor           time.Duration
	restallFor        time.Duration
	serveArgs         []string
	big               []byte // a 19 MB PNG
	addr              atomic.Uint32
}

// run starts a fresh server, runs the probe and prints its peak RSS, and
// its RSS after idling.
func (p *prober) run(name string, probe func(base string) string) {
	cmd := exec.Command(p.tinct, append([]string{"serve", "--addr", "127.0.0.1:0", "--store", p.store, "--outputs", p.dir, "--queue", "4"}, p.serveArgs...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		log.Fatalf("%s: tinct serve did not start: %v", name, err)
	}
	go io.Copy(io.Discard, out)
	base := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "tinct serve: listening on "), "/")
	start := time.Now()
	what := probe(base)
	took := time.Since(start)
	hwm := status(cmd.Process.Pid, "VmHWM")
	after := ""
	if p.idleFor > 0 {
		end, under := time.Now(), time.Duration(-1)
		for time.Since(end) < p.idleFor {
			if under < 0 && status(cmd.Process.Pid, "VmRSS") < 150<<10 {
				under = time.Since(end)
			}
			time.Sleep(250 * time.Millisecond)
		}
		rss := status(cmd.Process.Pid, "VmRSS")
		when := "not within the idle time"
		if under >= 0 {
			when = fmt.Sprintf("after %.1f s", under.Seconds())
		}
		after = fmt.Sprintf("  after %.0f s idle %4d MiB (under 150 MiB %s)", p.idleFor.Seconds(), rss>>10, when)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	fmt.Printf("%-11s peak RSS %4d MiB  (%.1f s)%s  %s\n", name, hwm>>10, took.Seconds(), after, what)
}

// client returns an HTTP client whose connections come from a loopback
// address of their own (127.0.0.10 and on, cycling), or from ip if given.
func (p *prober) client(ip string) *http.Client {
	if ip == "" {
		n := p.addr.Add(1)
		ip = fmt.Sprintf("127.0.%d.%d", (n/200)%250, 10+n%200)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// ordinary is the ordinary user's address.
const ordinary = "127.0.0.2"

// status returns a field of /proc/PID/status in KiB.
func status(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib
		}
	}
	return 0
}

func form(file []byte, fields ...string) ([]byte, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	fw, _ := mw.CreateFormFile("image", "photo.png")
	fw.Write(file)
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

// post sends a form from a loopback address of its own and returns the
// status and the body (a colorization's stream read to its end).
func (p *prober) post(u string, body []byte, ct string) (int, []byte) {
	return postWith(p.client(""), u, body, ct)
}

func postWith(c *http.Client, u string, body []byte, ct string) (int, []byte) {
	res, err := c.Post(u, ct, bytes.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// bigPNG is a 2500×2500 RGB noise PNG: about 19 MB, 25 MB decoded.
func (p *prober) bigPNG() []byte {
	if p.big == nil {
		img := image.NewRGBA(image.Rect(0, 0, 2500, 2500))
		rng := rand.New(rand.NewPCG(7, 8))
		for i := range img.Pix {
			img.Pix[i] = uint8(rng.Uint32())
			if i%4 == 3 {
				img.Pix[i] = 255
			}
		}
		var b bytes.Buffer
		png.Encode(&b, img)
		p.big = b.Bytes()
	}
	return p.big
}

func counts(statuses []int) string {
	m := map[int]int{}
	for _, s := range statuses {
		m[s]++
	}
	b, _ := json.Marshal(m)
	return "statuses " + string(b)
}

func (p *prober) parallel(n int, f func(i int) int) []int {
	out := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = f(i) })
	}
	wg.Wait()
	return out
}

func (p *prober) idle(base string) string {
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 300, 200)))
	body, ct := form(b.Bytes())
	s, _ := p.post(base+"/api/gray", body, ct)
	return counts([]int{s})
}

func (p *prober) gray30(base string) string {
	body, ct := form(p.bigPNG())
	return fmt.Sprintf("%d MB each, ", len(body)>>20) + counts(p.parallel(30, func(int) int { s, _ := p.post(base+"/api/gray", body, ct); return s }))
}

func (p *prober) colorize30(base string) string {
	body, ct := form(p.bigPNG(), "steps", "10", "samples", "1")
	var mu sync.Mutex
	var full []string
	st := p.parallel(30, func(int) int {
		s, b := p.post(base+"/api/colorize", body, ct)
		if i := bytes.Index(b, []byte("event: done\ndata: ")); i >= 0 {
			var d struct{ Full []string }
			json.Unmarshal(bytes.SplitN(b[i+18:], []byte("\n"), 2)[0], &d)
			mu.Lock()
			full = append(full, d.Full...)
			mu.Unlock()
		}
		return s
	})
	got := p.parallel(len(full), func(i int) int {
		res, err := p.client("").Get(base + full[i])
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	})
	return counts(st) + fmt.Sprintf("; %d full-resolution results fetched: %s", len(full), counts(got))
}

func (p *prober) png16(base string) string {
	file := png16()
	body, ct := form(file)
	return fmt.Sprintf("%d KB each, ", len(file)>>10) + counts(p.parallel(4, func(int) int { s, _ := p.post(base+"/api/gray", body, ct); return s }))
}

// stall opens a connection (from a loopback address of its own) that
// sends an upload's headers and first part header, then nothing.
func (p *prober) stall(base, path string) net.Conn {
	u, _ := url.Parse(base)
	n := p.addr.Add(1)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.%d.%d", (n/200)%250, 10+n%200))}}
	c, err := d.Dial("tcp", u.Host)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 19000000\r\n\r\n", path, u.Host)
	fmt.Fprint(c, "--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG")
	return c
}

func (p *prober) slowbody(base string) string {
	var conns []net.Conn
	for range 5 {
		conns = append(conns, p.stall(base, "/api/colorize"))
	}
	for range 30 {
		conns = append(conns, p.stall(base, "/api/gray"))
	}
	time.Sleep(200 * time.Millisecond) // let the server take them in
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 300, 200)))
	body, ct := form(b.Bytes(), "steps", "10", "samples", "1")
	start := time.Now()
	tries := 0
	user := p.client(ordinary)
	for {
		tries++
		s, _ := postWith(user, base+"/api/colorize", body, ct)
		if s == 200 || time.Since(start) > 5*time.Minute {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	waited := time.Since(start)
	var answers []int
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		s := 0
		if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			s = res.StatusCode
		}
		answers = append(answers, s)
		c.Close()
	}
	return fmt.Sprintf("a normal colorization got through after %.1f s (%d tries); the 35 stalled uploads were answered: %s", waited.Seconds(), tries, counts(answers))
}

func (p *prober) fullres(base string) string {
	img := image.NewGray(image.Rect(0, 0, 7000, 7000))
	for y := range 7000 {
		for x := range 7000 {
			img.Pix[y*7000+x] = uint8((x/7 + y/11) % 256)
		}
	}
	var b bytes.Buffer
	jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	img = nil
	body, ct := form(b.Bytes(), "steps", "10", "samples", "2")
	s, out := p.post(base+"/api/colorize", body, ct)
	i := bytes.Index(out, []byte("event: done\ndata: "))
	if s != 200 || i < 0 {
		return fmt.Sprintf("colorize: %d %.200s", s, out)
	}
	var d struct{ Full []string }
	json.Unmarshal(bytes.SplitN(out[i+18:], []byte("\n"), 2)[0], &d)
	var size int64
	var mu sync.Mutex
	st := p.parallel(8, func(i int) int {
		res, err := p.client("").Get(base + d.Full[i%len(d.Full)])
		if err != nil {
			return 0
		}
		defer res.Body.Close()
		if i == 0 {
			if m, err := png.DecodeConfig(res.Body); err == nil {
				mu.Lock()
				size = int64(m.Width) * int64(m.Height)
				mu.Unlock()
			}
		}
		io.Copy(io.Discard, res.Body)
		return res.StatusCode
	})
	return fmt.Sprintf("%d KB JPEG; 8 parallel fetches of %d-megapixel PNGs: %s", b.Len()>>10, size/1_000_000, counts(st))
}

// png16 is a valid 16-bit RGBA PNG of 7000×7000 zero pixels: a small file
// that decodes to 392 MB.
func png16() []byte { return blankPNG(16, 6, 8, 1) }

// zerosPNG is an 8-bit RGB PNG of 7000×7000 zero pixels (143 KB; 196 MB
// decoded as RGBA, 49 MB in gray), with an eXIf block of orientation o
// when o > 1.
func zerosPNG(o int) []byte { return blankPNG(8, 2, 3, o) }

// blankPNG is a PNG of 7000×7000 zero pixels of the bit depth and colour
// type given (bpp bytes a pixel), with an eXIf block of orientation o when
// o > 1.
func blankPNG(depth, colorType byte, bpp, o int) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := append([]byte(typ), data...)
		b.Write(c)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(c))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, 7000)
	binary.BigEndian.PutUint32(ihdr[4:], 7000)
	ihdr[8], ihdr[9] = depth, colorType
	chunk("IHDR", ihdr)
	if o > 1 {
		// big-endian TIFF: IFD0 with one entry, 0x0112 SHORT 1 = o
		exif := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")
		exif[19] = byte(o)
		chunk("eXIf", exif)
	}
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+7000*bpp)
	for range 7000 {
		zw.Write(row)
	}
	zw.Close()
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return b.Bytes()
}

func (p *prober) zeros(base string) string {
	file := zerosPNG(1)
	body, ct := form(file)
	s, out := p.post(base+"/api/gray", body, ct)
	return fmt.Sprintf("%d KB; %s %.120s", len(file)>>10, counts([]int{s}), bytes.TrimSpace(errText(s, out)))
}

func (p *prober) zeros6(base string) string {
	file := zerosPNG(6)
	body, ct := form(file)
	s, out := p.post(base+"/api/gray", body, ct)
	return fmt.Sprintf("%d KB, orientation 6; %s %.120s", len(file)>>10, counts([]int{s}), bytes.TrimSpace(errText(s, out)))
}

func (p *prober) zeros4(base string) string {
	body, ct := form(zerosPNG(1))
	return counts(p.parallel(4, func(int) int { s, _ := p.post(base+"/api/gray", body, ct); return s }))
}

// errText is an error answer's body, or nothing for a 200.
func errText(status int, body []byte) []byte {
	if status == 200 {
		return nil
	}
	return body
}

// ordinaryLoop previews and colorizes a small photo from the ordinary
// user's address until stop is closed, and returns how many of each got
// through and the longest any took.
func (p *prober) ordinaryLoop(base string, stop <-chan struct{}) (ok, failed int, worst time.Duration, last string) {
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 300, 200)))
	gray, gct := form(b.Bytes())
	col, cct := form(b.Bytes(), "steps", "10", "samples", "1")
	user := p.client(ordinary)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		var s int
		var out []byte
		if i%2 == 0 {
			s, out = postWith(user, base+"/api/gray", gray, gct)
		} else {
			s, out = postWith(user, base+"/api/colorize", col, cct)
			if s == 200 && !bytes.Contains(out, []byte("event: done")) {
				s = 0
			}
		}
		worst = max(worst, time.Since(start))
		if s == 200 {
			ok++
		} else {
			failed++
			last = fmt.Sprintf("%d %.100s", s, bytes.TrimSpace(out))
		}
	}
}

func (p *prober) flood(base string) string {
	file := zerosPNG(1)
	gray, gct := form(file)
	col, cct := form(file, "steps", "10", "samples", "1")
	stop := make(chan struct{})
	type result struct {
		ok, failed int
		worst      time.Duration
		last       string
	}
	res := make(chan result, 1)
	go func() {
		var r result
		r.ok, r.failed, r.worst, r.last = p.ordinaryLoop(base, stop)
		res <- r
	}()
	st := p.parallel(60, func(i int) int {
		if i%2 == 0 {
			s, _ := p.post(base+"/api/gray", gray, gct)
			return s
		}
		s, out := p.post(base+"/api/colorize", col, cct)
		if s == 200 && !bytes.Contains(out, []byte("event: done")) {
			return 0
		}
		return s
	})
	close(stop)
	r := <-res
	// two more ordinary requests afterwards
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 300, 200)))
	g2, g2ct := form(b.Bytes())
	c2, c2ct := form(b.Bytes(), "steps", "10", "samples", "1")
	s1, _ := postWith(p.client(ordinary), base+"/api/gray", g2, g2ct)
	s2, _ := postWith(p.client(ordinary), base+"/api/colorize", c2, c2ct)
	what := fmt.Sprintf("flood %s; ordinary user during it: %d ok, %d not (slowest %.1f s) %s; after: %s", counts(st), r.ok, r.failed, r.worst.Seconds(), r.last, counts([]int{s1, s2}))
	return what
}

// restall runs five clients (each its own address) that send an upload's
// headers, a body of 1000000 bytes declared, and nothing more, and
// reconnect as soon as they are answered, for the restall time, while the
// ordinary user colorizes.
func (p *prober) restall(base string) string {
	u, _ := url.Parse(base)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answers sync.Map
	for i := range 5 {
		ip := fmt.Sprintf("127.0.1.%d", 10+i)
		wg.Go(func() {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", u.Host)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				go func() { <-stop; c.Close() }()
				fmt.Fprintf(c, "POST /api/colorize HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 1000000\r\n\r\n", u.Host)
				s := 0
				if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					s = res.StatusCode
				}
				c.Close()
				v, _ := answers.LoadOrStore(s, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 300, 200)))
	col, cct := form(b.Bytes(), "steps", "10", "samples", "1")
	user := p.client(ordinary)
	ok, failed, worst := 0, 0, time.Duration(0)
	last := ""
	for end := time.Now().Add(p.restallFor); time.Now().Before(end); {
		start := time.Now()
		s, out := postWith(user, base+"/api/colorize", col, cct)
		worst = max(worst, time.Since(start))
		if s == 200 && bytes.Contains(out, []byte("event: done")) {
			ok++
		} else {
			failed++
			last = fmt.Sprintf("%d %.100s", s, bytes.TrimSpace(out))
		}
	}
	close(stop)
	wg.Wait()
	m := map[int]int64{}
	answers.Range(func(k, v any) bool { m[k.(int)] = v.(*atomic.Int64).Load(); return true })
	a, _ := json.Marshal(m)
	return fmt.Sprintf("%.0f s: the ordinary user's colorizations: %d ok, %d not (slowest %.1f s) %s; the stallers' answers %s", p.restallFor.Seconds(), ok, failed, worst.Seconds(), last, a)
}
