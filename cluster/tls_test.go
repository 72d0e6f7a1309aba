package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMakeCerts(t *testing.T) {
	out := t.TempDir()
	dirs, err := MakeCerts(CertOptions{Out: out, Nodes: [][]string{{"coordinator", "10.0.0.1"}, {"gpu1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 || filepath.Base(dirs[0]) != "coordinator" {
		t.Fatalf("node folders %v", dirs)
	}
	b, err := os.ReadFile(filepath.Join(dirs[0], CertFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("10.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := cert.VerifyHostname("coordinator"); err != nil {
		t.Error(err)
	}
	if err := cert.VerifyHostname("gpu1"); err == nil {
		t.Error("the coordinator's certificate is valid for gpu1")
	}
	for _, f := range []string{filepath.Join(dirs[1], KeyFile), filepath.Join(out, caKey)} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, st.Mode(), err)
		}
	}
	// a second run adds a node under the same CA
	ca1, _ := os.ReadFile(filepath.Join(out, CAFile))
	if _, err := MakeCerts(CertOptions{Out: out, Nodes: [][]string{{"gpu2"}}}); err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(filepath.Join(out, "gpu2", CAFile))
	if string(ca1) != string(ca2) {
		t.Error("adding a node made a new CA")
	}
	if _, err := LoadTLS(dirs[1]); err != nil {
		t.Error(err)
	}
	if _, err := LoadTLS(out); err == nil || !strings.Contains(err.Error(), CertFile) {
		t.Errorf("LoadTLS of a folder without tls.crt: %v", err)
	}
}

func TestPlaintextCheck(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:7070": true, "[::1]:1": true, "localhost:0": true, "127.0.0.1": true,
		"0.0.0.0:7070": false, ":7070": false, "10.0.0.1:1": false, "example.org:1": false} {
		if err := Plaintext().Check(addr); (err == nil) != ok {
			t.Errorf("plaintext on %s: %v", addr, err)
		}
	}
}
