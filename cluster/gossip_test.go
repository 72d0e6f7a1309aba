package cluster

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
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

// TestGossipLogClosedConnection: memberlist's sends that race its own
// shutdown ("use of closed network connection") are not warnings: a node
// that leaves cleanly logs none.
func TestGossipLogClosedConnection(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	g := &gossipLog{log: log, junk: &Junk{Log: log}}
	g.Write([]byte("[ERR] memberlist: Failed to send gossip to 127.0.0.1:37791: write udp 127.0.0.1:36749->127.0.0.1:37791: use of closed network connection\n"))
	if strings.Contains(logs.String(), "WARN") {
		t.Errorf("a send after shutdown is a warning:\n%s", logs.String())
	}
	g.Write([]byte("[ERR] memberlist: Failed to send gossip to 127.0.0.1:37791: connection refused\n"))
	if !strings.Contains(logs.String(), "WARN") {
		t.Errorf("a failed send is not a warning:\n%s", logs.String())
	}
}
