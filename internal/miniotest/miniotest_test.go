package miniotest

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

func TestSharedStartBucketsStop(t *testing.T) {
	var s Shared
	defer s.Stop()
	srv := s.Server(t, "b-one")
	if again := s.Server(t, "b-one", "b-two"); again != srv {
		t.Fatal("Shared.Server started a second server")
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"b-one", "b-two"} {
		ok, err := c.BucketExists(context.Background(), b)
		if err != nil || !ok {
			t.Errorf("bucket %s: exists %v, %v", b, ok, err)
		}
	}
	s.Stop()
	if conn, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("MinIO still answers on %s after Stop", srv.Addr)
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("data folder %s left after Stop: %v", s.dir, err)
	}
}
