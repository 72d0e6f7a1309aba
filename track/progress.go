package track

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mattn/go-isatty"
)

// How often Progress prints: redraws on a terminal, lines in a log.
const (
	terminalInterval = 100 * time.Millisecond
	logInterval      = 5 * time.Second
)

// barWidth is the number of cells between the brackets of the bar.
const barWidth = 20

// Progress prints the progress of a long loop as one line:
//
//	train [=========>          ] 480/1000  48% loss=0.1234 img/s=45.6 | 9.60 it/s ETA 54s
//
// On a terminal it redraws the line in place with "\r", at most about ten
// times a second; on anything else (a log file, a pipe) it prints a new line
// at most every five seconds, so logs stay short. The rate is the average
// since NewProgress. Output errors are ignored: progress is advisory. A
// Progress is safe for concurrent use.
type Progress struct {
	out      io.Writer
	total    int
	label    string
	terminal bool
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	start    time.Time
	last     time.Time // when the last line was printed; zero before the first
	done     int
	fields   []any
	width    int // runes in the last line drawn on a terminal
	finished bool
}

// NewProgress returns a Progress for total steps, printing to out with label
// at the start of each line. A total of zero or less means unknown: the line
// then shows the count and rate, without bar, percentage or ETA. Whether out
// is a terminal is decided here, from its file descriptor if it has one.
func NewProgress(out io.Writer, total int, label string) *Progress {
	return newProgress(out, total, label, isTerminal(out), time.Now)
}

func newProgress(out io.Writer, total int, label string, terminal bool, now func() time.Time) *Progress {
	interval := logInterval
	if terminal {
		interval = terminalInterval
	}
	p := &Progress{
		out:      out,
		total:    total,
		label:    label,
		terminal: terminal,
		interval: interval,
		now:      now,
		start:    now(),
	}
	if terminal {
		bars.mu.Lock()
		bars.p = p
		bars.mu.Unlock()
	}
	return p
}

// bars is the progress bar drawn on the terminal now, if any: LogWriter
// writes log lines above it instead of onto it.
var bars struct {
	mu sync.Mutex
	p  *Progress
}

// LogWriter wraps the writer of log lines (the terminal the bar is drawn
// on): each line is written on a line of its own — the bar is erased
// first and drawn again below the line — so log lines and the bar never
// run into each other.
func LogWriter(w io.Writer) io.Writer { return &logWriter{w: w} }

type logWriter struct{ w io.Writer }

func (l *logWriter) Write(b []byte) (int, error) {
	bars.mu.Lock()
	defer bars.mu.Unlock()
	p := bars.p
	if p == nil {
		return l.w.Write(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	drawn := p.width > 0 && !p.finished
	if drawn {
		io.WriteString(p.out, "\r\x1b[K") // erase the bar
		p.width = 0
	}
	n, err := l.w.Write(b)
	if drawn {
		p.print(p.line(p.now(), false), false)
	}
	return n, err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// Update records that done steps are complete and prints the line if the last
// print is old enough. fields are key, value pairs shown as key=value after
// the count, for example Update(i, "loss", 0.123, "img/s", 45.6); floats are
// shown with 4 significant digits and a trailing unpaired value as is.
func (p *Progress) Update(done int, fields ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.done, p.fields = done, fields
	t := p.now()
	if !p.last.IsZero() && t.Sub(p.last) < p.interval {
		return
	}
	p.last = t
	p.print(p.line(t, false), false)
}

// Done prints the final line, with the total time taken, and ends it with a
// newline. Later calls to Update and Done do nothing.
func (p *Progress) Done() {
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return
	}
	p.finished = true
	p.print(p.line(p.now(), true), true)
	p.mu.Unlock()
	// after p.mu: LogWriter takes bars.mu before p.mu
	bars.mu.Lock()
	if bars.p == p {
		bars.p = nil
	}
	bars.mu.Unlock()
}

// print writes line: on a terminal over the previous one, else on its own.
func (p *Progress) print(line string, final bool) {
	if !p.terminal {
		io.WriteString(p.out, line+"\n")
		return
	}
	n := utf8.RuneCountInString(line)
	pad := strings.Repeat(" ", max(p.width-n, 0)) // erase a longer previous line
	p.width = n
	end := ""
	if final {
		end = "\n"
	}
	io.WriteString(p.out, "\r"+line+pad+end)
}

// line formats the progress line at time t.
func (p *Progress) line(t time.Time, final bool) string {
	var b strings.Builder
	if p.label != "" {
		b.WriteString(p.label)
		b.WriteByte(' ')
	}
	if p.total > 0 {
		frac := min(max(float64(p.done)/float64(p.total), 0), 1)
		filled := int(frac * barWidth)
		b.WriteByte('[')
		b.WriteString(strings.Repeat("=", filled))
		if filled < barWidth {
			b.WriteByte('>')
			b.WriteString(strings.Repeat(" ", barWidth-filled-1))
		}
		b.WriteByte(']')
		digits := len(strconv.Itoa(p.total))
		fmt.Fprintf(&b, " %*d/%d %3.0f%%", digits, p.done, p.total, 100*frac)
	} else {
		fmt.Fprintf(&b, "%d", p.done)
	}
	for i := 0; i < len(p.fields); i += 2 {
		b.WriteByte(' ')
		if i+1 == len(p.fields) {
			b.WriteString(formatField(p.fields[i]))
			break
		}
		b.WriteString(formatField(p.fields[i]))
		b.WriteByte('=')
		b.WriteString(formatField(p.fields[i+1]))
	}
	elapsed := t.Sub(p.start)
	var rate float64
	if elapsed > 0 {
		rate = float64(p.done) / elapsed.Seconds()
	}
	if rate > 0 {
		fmt.Fprintf(&b, " | %s it/s", formatRate(rate))
	}
	switch {
	case final:
		fmt.Fprintf(&b, " | done in %s", formatDuration(elapsed))
	case p.total > 0 && rate > 0 && p.done < p.total:
		eta := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		fmt.Fprintf(&b, " ETA %s", formatDuration(eta))
	}
	return b.String()
}

func formatField(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'g', 4, 64)
	case float32:
		return strconv.FormatFloat(float64(v), 'g', 4, 32)
	case time.Duration:
		return formatDuration(v)
	}
	return fmt.Sprint(v)
}

func formatRate(r float64) string {
	switch {
	case r >= 100:
		return strconv.FormatFloat(r, 'f', 0, 64)
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}

// formatDuration rounds d to whole seconds, or to milliseconds under one.
func formatDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
