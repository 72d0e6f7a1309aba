package cluster

import (
	"net"
	"testing"
)

func TestAdvertised(t *testing.T) {
	for _, tc := range []struct{ bound, host, want string }{
		{"127.0.0.1:7071", "", "127.0.0.1:7071"},
		{"10.0.0.2:7071", "", "10.0.0.2:7071"},
		{"0.0.0.0:7071", "10.1.2.3", "10.1.2.3:7071"},
		{"[::]:7071", "localhost", "127.0.0.1:7071"},
	} {
		got, err := Advertised(tc.bound, tc.host)
		if err != nil || got != tc.want {
			t.Errorf("Advertised(%q, %q) = %q, %v; want %q", tc.bound, tc.host, got, err, tc.want)
		}
	}
	// bound to every interface, nothing given: this machine's address
	got, err := Advertised("0.0.0.0:7071", "")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(got)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || port != "7071" {
		t.Errorf("Advertised(0.0.0.0:7071) = %q, want this machine's address", got)
	}
	if _, err := Advertised("0.0.0.0:1", "no-such-host.invalid"); err == nil {
		t.Error("an unresolvable advertise name is accepted")
	}
}
