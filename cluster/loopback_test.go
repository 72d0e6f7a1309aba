package cluster

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestPlaintextChecksResolvedAddresses: the loopback check behind
// --plaintext resolves names, localhost included, and accepts one only
// when every address it resolves to is a loopback one.
func TestPlaintextChecksResolvedAddresses(t *testing.T) {
	hosts := map[string][]net.IP{
		"localhost":    {net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		"looped.test":  {net.ParseIP("127.0.1.1")},
		"mixed.test":   {net.ParseIP("127.0.0.1"), net.ParseIP("192.0.2.7")},
		"outside.test": {net.ParseIP("192.0.2.7")},
	}
	old := lookupIP
	t.Cleanup(func() { lookupIP = old })
	lookupIP = func(_ context.Context, host string) ([]net.IP, error) {
		if ips, ok := hosts[host]; ok {
			return ips, nil
		}
		return nil, errors.New("no such host")
	}
	for addr, want := range map[string]bool{
		"localhost:7070": true, "looped.test:1": true, "127.0.0.1:0": true, "[::1]:7070": true,
		"mixed.test:7070": false, "outside.test:7070": false, "nowhere.test:7070": false,
		":7070": false, "0.0.0.0:7070": false, "10.1.2.3:7070": false,
	} {
		err := Plaintext().Check(addr)
		if got := err == nil; got != want {
			t.Errorf("plaintext on %s: %v, want allowed=%v", addr, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "loopback") {
			t.Errorf("plaintext on %s: %v does not say why", addr, err)
		}
	}
	// a hosts file that maps localhost elsewhere
	hosts["localhost"] = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("192.0.2.9")}
	if err := Plaintext().Check("localhost:7070"); err == nil {
		t.Error("plaintext on localhost that also resolves to 192.0.2.9 was allowed")
	}
}
