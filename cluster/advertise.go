package cluster

import (
	"fmt"
	"net"
	"os"
)

// Advertised is the address to tell others for a server bound to bound
// (host:port as bound, port resolved): host:port when host is given (a
// name is resolved to its address), else bound itself unless its host is
// unspecified (0.0.0.0, ::), in which case this machine's first
// non-loopback address — what a container or pod is reached at.
func Advertised(bound, host string) (string, error) {
	bh, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", err
	}
	if host == "" {
		ip := net.ParseIP(bh)
		if bh != "" && (ip == nil || !ip.IsUnspecified()) {
			return bound, nil
		}
		if host, err = ownIP(); err != nil {
			return "", err
		}
	}
	ip, err := AdvertiseIP(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, port), nil
}

// AdvertiseIP resolves host (a name or an IP address) to one IP address;
// "" is this machine's first non-loopback address.
func AdvertiseIP(host string) (string, error) {
	if host == "" {
		return ownIP()
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("advertise address %q: cannot resolve it: %v", host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}

// ownIP is this machine's first non-loopback IPv4 address (IPv6 if none),
// or that of its host name.
func ownIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		var v6 string
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
				continue
			}
			if n.IP.To4() != nil {
				return n.IP.String(), nil
			}
			if v6 == "" {
				v6 = n.IP.String()
			}
		}
		if v6 != "" {
			return v6, nil
		}
	}
	name, err := os.Hostname()
	if err != nil {
		return "", err
	}
	ips, err := net.LookupIP(name)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("no address to advertise: this machine has no non-loopback address (give --advertise)")
	}
	return ips[0].String(), nil
}
