package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/mattn/go-isatty"

	"github.com/tinct/tinct/track"
)

// setupLogging makes the default logger: on a terminal short lines a
// person reads ("15:53:17 INFO epoch done epoch=1 …"), written above the
// progress bar instead of onto it; elsewhere logfmt (key=value) with full
// timestamps; JSON lines with --log-format json.
func setupLogging(format string, level slog.Level) error {
	opts := &slog.HandlerOptions{Level: level}
	w := track.LogWriter(os.Stderr)
	var h slog.Handler
	switch format {
	case "", "auto":
		if isatty.IsTerminal(os.Stderr.Fd()) {
			h = &consoleHandler{w: w, level: level, mu: &sync.Mutex{}}
		} else {
			h = slog.NewTextHandler(w, opts)
		}
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return fmt.Errorf("--log-format %q: want auto, text or json", format)
	}
	slog.SetDefault(slog.New(h))
	return nil
}

// consoleHandler writes "HH:MM:SS LEVEL message key=value …".
type consoleHandler struct {
	w      io.Writer
	level  slog.Level
	mu     *sync.Mutex
	prefix string // attributes from WithAttrs, formatted
	group  string
}

func (h *consoleHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *consoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Time.Format("15:04:05"))
	b.WriteByte(' ')
	b.WriteString(fmt.Sprintf("%-5s", r.Level.String()))
	b.WriteByte(' ')
	b.WriteString(r.Message)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *consoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range as {
		writeAttr(&b, h.group, a)
	}
	c := *h
	c.prefix += b.String()
	return &c
}

func (h *consoleHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.group = h.group + name + "."
	return &c
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, group+a.Key+".", g)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(group + a.Key)
	b.WriteByte('=')
	b.WriteString(quote(formatValue(a.Value)))
}

// formatValue shows maps as "k: v, …" in key order instead of Go's map[…].
func formatValue(v slog.Value) string {
	if v.Kind() == slog.KindAny {
		rv := reflect.ValueOf(v.Any())
		if rv.Kind() == reflect.Map {
			var parts []string
			for _, k := range rv.MapKeys() {
				parts = append(parts, fmt.Sprintf("%v: %v", k.Interface(), rv.MapIndex(k).Interface()))
			}
			sort.Strings(parts)
			return strings.Join(parts, ", ")
		}
	}
	return v.String()
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \"=\t\n") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
