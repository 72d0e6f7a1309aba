package s3

import (
	"os"
	"strings"
	"testing"
)

// TestEnvOrFile: NAME_FILE (a container secret) stands in for NAME, its
// trailing newlines trimmed, and a missing file is named.
func TestEnvOrFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/key", []byte("file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "env-key")
	if got, err := envOrFile("AWS_ACCESS_KEY_ID"); err != nil || got != "env-key" {
		t.Errorf("key from the environment: %q, %v", got, err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID_FILE", dir+"/key")
	if got, err := envOrFile("AWS_ACCESS_KEY_ID"); err != nil || got != "file-key" {
		t.Errorf("key from file: %q, %v", got, err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID_FILE", dir+"/missing")
	if _, err := envOrFile("AWS_ACCESS_KEY_ID"); err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID_FILE") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		opt    Options
		host   string
		secure bool
		err    string
	}{
		{Options{}, "s3.amazonaws.com", false, ""},
		{Options{S3Secure: true}, "s3.amazonaws.com", true, ""},
		{Options{S3Endpoint: "minio:9000", S3Secure: true}, "minio:9000", true, ""},
		{Options{S3Endpoint: "http://minio:9000/", S3Secure: true}, "minio:9000", false, ""},
		{Options{S3Endpoint: "HTTPS://minio:9000"}, "minio:9000", true, ""},
		{Options{S3Endpoint: "ftp://host"}, "", false, `scheme "ftp" is not http or https`},
		{Options{S3Endpoint: "host:9000/minio"}, "", false, "give host[:port]"},
	} {
		host, secure, err := parseEndpoint(tc.opt)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: error %v, want %q", tc.opt, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || secure != tc.secure {
			t.Errorf("%+v: %q, %v, %v; want %q, %v", tc.opt, host, secure, err, tc.host, tc.secure)
		}
	}
}

func TestEnvOptions(t *testing.T) {
	t.Setenv(EnvEndpoint, "minio:9000")
	t.Setenv(EnvInsecure, "1")
	t.Setenv(EnvRegion, "eu")
	if got, want := EnvOptions(), (Options{S3Endpoint: "minio:9000", S3Secure: false, S3Region: "eu"}); got != want {
		t.Errorf("EnvOptions = %+v, want %+v", got, want)
	}
	t.Setenv(EnvInsecure, "")
	if !EnvOptions().S3Secure {
		t.Error("TLS off without TINCT_S3_INSECURE")
	}
}
