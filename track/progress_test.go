package track

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProgressLog(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	p := newProgress(&buf, 1000, "train", false, clock.now)
	// 1000 steps of 20 ms: 20 s in all, one Update per step.
	for i := 1; i <= 1000; i++ {
		clock.advance(20 * time.Millisecond)
		p.Update(i, "loss", 0.123456, "img/s", float32(45.6))
	}
	p.Done()
	p.Done()            // no second final line
	p.Update(1000, "x") // ignored after Done

	out := buf.String()
	if strings.Contains(out, "\r") {
		t.Errorf("carriage return in log output %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// The first Update prints, then one line per 5 s, then Done's line.
	if len(lines) > 20/5+2 {
		t.Fatalf("%d lines for 20 s of updates, want at most 6:\n%s", len(lines), out)
	}
	first := lines[0]
	for _, want := range []string{"train [", "   1/1000", "loss=0.1235", "img/s=45.6", "50.0 it/s", "ETA 20s"} {
		if !strings.Contains(first, want) {
			t.Errorf("first line %q lacks %q", first, want)
		}
	}
	mid := lines[1] // printed 5 s after the first, at step 251
	for _, want := range []string{" 251/1000", " 25%", "[=====>", "50.0 it/s", "ETA 15s"} {
		if !strings.Contains(mid, want) {
			t.Errorf("line %q lacks %q", mid, want)
		}
	}
	last := lines[len(lines)-1]
	for _, want := range []string{"1000/1000", "100%", "[" + strings.Repeat("=", barWidth) + "]", "loss=0.1235", "done in 20s"} {
		if !strings.Contains(last, want) {
			t.Errorf("final line %q lacks %q", last, want)
		}
	}
	if strings.Contains(last, "ETA") {
		t.Errorf("final line %q has an ETA", last)
	}
}

func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	p := newProgress(&buf, 50, "", true, clock.now)
	for i := 1; i <= 50; i++ {
		clock.advance(10 * time.Millisecond) // 100 updates a second
		p.Update(i, "loss", 2.0)
	}
	out := buf.String()
	if strings.Contains(out, "\n") {
		t.Errorf("newline before Done: %q", out)
	}
	// 0.5 s of updates at most ~10 redraws a second.
	if n := strings.Count(out, "\r"); n < 3 || n > 6 {
		t.Errorf("%d redraws in 0.5 s, want about 5", n)
	}
	p.Done()
	out = buf.String()
	if !strings.HasSuffix(out, "\n") || !strings.Contains(out, "\r[") || !strings.Contains(out, "50/50") {
		t.Errorf("terminal output %q", out)
	}
}

// A shorter line overwrites the whole of a longer one.
func TestProgressTerminalErasesLongerLine(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	p := newProgress(&buf, 0, "x", true, clock.now)
	p.Update(1, "note", "a long field value")
	clock.advance(time.Second)
	p.Update(2)
	draws := strings.Split(buf.String(), "\r")[1:]
	if len(draws) != 2 || len(draws[1]) < len(draws[0]) {
		t.Errorf("redraws %q", draws)
	}
}

func TestProgressUnknownTotal(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	p := newProgress(&buf, 0, "scan", false, clock.now)
	clock.advance(2 * time.Second)
	p.Update(10, "odd")
	line := buf.String()
	for _, want := range []string{"scan 10 odd", "5.00 it/s"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if strings.ContainsAny(line, "[%") || strings.Contains(line, "ETA") {
		t.Errorf("line %q shows a bar, percentage or ETA for an unknown total", line)
	}
}

func TestNewProgressNotTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := NewProgress(f, 10, "x"); p.terminal || p.interval != logInterval {
		t.Errorf("regular file treated as a terminal")
	}
	if p := NewProgress(&bytes.Buffer{}, 10, "x"); p.terminal {
		t.Errorf("buffer treated as a terminal")
	}
}

// TestLogWriterAboveBar: a log line written while a bar is drawn on the
// terminal erases the bar, stands on its own line, and the bar is drawn
// again below it.
func TestLogWriterAboveBar(t *testing.T) {
	var term bytes.Buffer
	clock := time.Unix(0, 0)
	p := newProgress(&term, 10, "train", true, func() time.Time { return clock })
	bars.mu.Lock()
	bars.p = p
	bars.mu.Unlock()
	p.Update(3)
	log := LogWriter(&term)
	fmt.Fprintln(log, `level=INFO msg="epoch done"`)
	p.Done()
	out := term.String()
	lines := strings.Split(out, "\n")
	var logLine string
	for _, l := range lines {
		if strings.Contains(l, "epoch done") {
			logLine = l
		}
	}
	// what a terminal shows of that line: the text after the last \r,
	// after an erase-line
	shown := logLine[strings.LastIndex(logLine, "\r")+1:]
	if !strings.HasPrefix(shown, "\x1b[K") || strings.Contains(strings.TrimPrefix(shown, "\x1b[K"), "train [") {
		t.Errorf("the log line shares a line with the bar: %q", logLine)
	}
	if !strings.Contains(out[strings.Index(out, "epoch done"):], "train [") {
		t.Errorf("the bar was not drawn again after the log line: %q", out)
	}
	// after Done, log lines are written as they are
	term.Reset()
	fmt.Fprintln(log, "after")
	if term.String() != "after\n" {
		t.Errorf("after Done: %q", term.String())
	}
}
