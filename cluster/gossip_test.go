package cluster

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
)

// TestGossipLocalhostBindsLoopback: --gossip localhost:PORT binds and
// advertises 127.0.0.1 — memberlist took the name as no address at all and
// listened on every interface, advertising [::].
func TestGossipLocalhostBindsLoopback(t *testing.T) {
	ml, err := StartGossip(GossipOptions{Name: "n", Bind: "localhost:0", Secret: []byte("s"), Profile: "local", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	n := ml.LocalNode()
	if !n.Addr.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("advertised %v, want 127.0.0.1", n.Addr)
	}
	// nothing answers on the port but at 127.0.0.1
	port := strconv.Itoa(int(n.Port))
	for _, ip := range localIPs(t) {
		if ip.IsLoopback() {
			continue
		}
		if c, err := net.Dial("tcp", net.JoinHostPort(ip.String(), port)); err == nil {
			c.Close()
			t.Errorf("the gossip port answers on %s", ip)
		}
	}
}

func localIPs(t *testing.T) []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips
}
