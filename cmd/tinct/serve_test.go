package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeHelp(t *testing.T) {
	cmd := newServeCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--addr", "127.0.0.1:7860", "--store", "--run", "--outputs", "--queue", "503", "20 MiB",
		"docs/serve.md", "--token-file", "TINCT_SERVE_TOKEN", "--coordinator", "full resolution"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q:\n%s", want, out.String())
		}
	}
}

// TestServeRuns starts tinct serve on a free port, asks it for the cluster
// status and the (empty) checkpoint list, and stops it by cancelling its
// context, as SIGINT does.
func TestServeRuns(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "checkpoints"), 0o755)
	cmd := newServeCmd()
	pr, pw := io.Pipe()
	cmd.SetOut(pw)
	cmd.SetArgs([]string{"--addr", "127.0.0.1:0", "--store", filepath.Join(dir, "checkpoints"), "--outputs", dir, "--queue", "1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx); pw.Close() }()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no output: %v (command: %v)", err, <-done)
	}
	go io.Copy(io.Discard, pr)
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "tinct serve: listening on ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("first line %q", line)
	}
	for path, want := range map[string]string{"api/cluster": "not attached to a coordinator", "api/checkpoints": `"default":"demo"`} {
		res, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), want) || !json.Valid(body) {
			t.Errorf("GET %s: %d %s", path, res.StatusCode, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tinct serve did not stop")
	}
}

func TestServeErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", ln.Addr().String(), "--store", dir}, "choose another --addr"},
		{[]string{"--addr", "127.0.0.1:0", "--store", "ftp://host/x"}, "unknown scheme"},
		{[]string{"--addr", "127.0.0.1:0", "--store", dir, "--queue", "-1"}, "queue"},
		{[]string{"extra"}, "unknown command"},
	} {
		cmd := newServeCmd()
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		cmd.SetArgs(tc.args)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

// startServe runs tinct serve with args and env in the background and
// returns its URL once it listens, or "" and the error it stopped with.
func startServe(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newServeCmd()
	pr, pw := io.Pipe()
	cmd.SetOut(pw)
	cmd.SetErr(io.Discard)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = cmd.ExecuteContext(ctx); pw.Close(); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("tinct serve did not stop")
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		<-done
		return "", runErr
	}
	go io.Copy(io.Discard, pr)
	url, _ := strings.CutPrefix(strings.TrimSpace(line), "tinct serve: listening on ")
	return url, nil
}

// TestServeToken: on an address other machines can reach, tinct serve
// needs a token (--token-file or $TINCT_SERVE_TOKEN) and then asks for it.
func TestServeToken(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "checkpoints")
	os.Mkdir(store, 0o755)
	t.Setenv("TINCT_SERVE_TOKEN", "")
	if url, err := startServe(t, "--addr", "0.0.0.0:0", "--store", store, "--outputs", dir); url != "" || err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Fatalf("0.0.0.0 without a token: listening on %q, error %v; want a refusal naming --token-file", url, err)
	}
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("short\n"), 0o600)
	if _, err := startServe(t, "--addr", "0.0.0.0:0", "--store", store, "--token-file", tokenFile); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a short token: %v", err)
	}
	const token = "0123456789abcdef0123"
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	for _, tc := range []struct {
		args []string
		env  string
	}{
		{[]string{"--token-file", tokenFile}, ""},
		{nil, token},
	} {
		t.Setenv("TINCT_SERVE_TOKEN", tc.env)
		url, err := startServe(t, append([]string{"--addr", "0.0.0.0:0", "--store", store, "--outputs", dir}, tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		for auth, want := range map[string]int{"": 401, "Bearer " + token: 200} {
			req, _ := http.NewRequest("GET", url+"api/checkpoints", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want {
				t.Errorf("%v env %q, Authorization %q: %d, want %d", tc.args, tc.env, auth, res.StatusCode, want)
			}
		}
	}
}

// TestServeStoreMissing: a --store folder that does not exist (a typo) is
// an error naming it, not a new empty store served with the demo model.
func TestServeStoreMissing(t *testing.T) {
	store := filepath.Join(t.TempDir(), "no-such-store")
	for _, arg := range []string{store, "file://" + store} {
		url, err := startServe(t, "--addr", "127.0.0.1:0", "--store", arg)
		if url != "" || err == nil || !strings.Contains(err.Error(), store) {
			t.Errorf("--store %s: listening on %q, error %v; want an error naming %s", arg, url, err, store)
		}
		if _, err := os.Stat(store); !os.IsNotExist(err) {
			t.Fatalf("--store %s: the folder was made (%v)", arg, err)
		}
	}
}
