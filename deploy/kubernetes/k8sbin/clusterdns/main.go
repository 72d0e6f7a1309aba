// Command clusterdns is the cluster DNS of deploy/kubernetes/test.sh: the
// part of CoreDNS's kubernetes plugin a one-node test cluster needs, with
// nothing but the standard library. It answers A queries over UDP for
//
//	SERVICE.NAMESPACE.svc.DOMAIN        the Service's cluster IP, or for a
//	                                    headless Service its ready endpoints
//	HOSTNAME.SERVICE.NAMESPACE.svc.DOMAIN  the endpoint with that hostname
//	                                    (a StatefulSet's pods)
//
// asking the API server at each query (a test cluster's load). Other
// record types of a name that exists get an empty answer; anything else is
// NXDOMAIN: no query leaves this machine.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

type api struct {
	server, token string
	client        *http.Client
}

func (a *api) get(path string, v any) (bool, error) {
	req, err := http.NewRequest("GET", a.server+path, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return true, json.NewDecoder(resp.Body).Decode(v)
}

type service struct {
	Spec struct {
		ClusterIP string `json:"clusterIP"`
	} `json:"spec"`
}

type sliceList struct {
	Items []struct {
		AddressType string `json:"addressType"`
		Endpoints   []struct {
			Addresses  []string `json:"addresses"`
			Hostname   string   `json:"hostname"`
			Conditions struct {
				Ready *bool `json:"ready"`
			} `json:"conditions"`
		} `json:"endpoints"`
	} `json:"items"`
}

// lookup resolves a name under DOMAIN: its IPv4 addresses, and whether
// the name exists.
func (a *api) lookup(name, domain string) ([]net.IP, bool, error) {
	rest, ok := strings.CutSuffix(name, ".svc."+domain)
	if !ok {
		return nil, false, nil
	}
	labels := strings.Split(rest, ".")
	var host, svc, ns string
	switch len(labels) {
	case 2:
		svc, ns = labels[0], labels[1]
	case 3:
		host, svc, ns = labels[0], labels[1], labels[2]
	default:
		return nil, false, nil
	}
	var s service
	found, err := a.get("/api/v1/namespaces/"+url.PathEscape(ns)+"/services/"+url.PathEscape(svc), &s)
	if err != nil || !found {
		return nil, false, err
	}
	if host == "" && s.Spec.ClusterIP != "None" {
		ip := net.ParseIP(s.Spec.ClusterIP).To4()
		if ip == nil {
			return nil, true, nil
		}
		return []net.IP{ip}, true, nil
	}
	var sl sliceList
	q := url.Values{"labelSelector": {"kubernetes.io/service-name=" + svc}}
	if _, err := a.get("/apis/discovery.k8s.io/v1/namespaces/"+url.PathEscape(ns)+"/endpointslices?"+q.Encode(), &sl); err != nil {
		return nil, false, err
	}
	var ips []net.IP
	for _, it := range sl.Items {
		if it.AddressType != "IPv4" {
			continue
		}
		for _, e := range it.Endpoints {
			if (e.Conditions.Ready != nil && !*e.Conditions.Ready) || (host != "" && e.Hostname != host) {
				continue
			}
			for _, ad := range e.Addresses {
				if ip := net.ParseIP(ad).To4(); ip != nil {
					ips = append(ips, ip)
				}
			}
		}
	}
	return ips, host == "" || len(ips) > 0, nil
}

const (
	typeA     = 1
	classIN   = 1
	rcodeOK   = 0
	rcodeFail = 2
	rcodeNX   = 3
	rcodeNI   = 4
)

// question parses the one question of a query: its name (lower case, no
// final dot), type and the offset past it.
func question(msg []byte) (string, uint16, int, error) {
	if len(msg) < 12 || binary.BigEndian.Uint16(msg[4:]) != 1 {
		return "", 0, 0, errors.New("not one question")
	}
	var labels []string
	i := 12
	for {
		if i >= len(msg) {
			return "", 0, 0, errors.New("short name")
		}
		n := int(msg[i])
		i++
		if n == 0 {
			break
		}
		if n > 63 || i+n > len(msg) {
			return "", 0, 0, errors.New("bad label")
		}
		labels = append(labels, strings.ToLower(string(msg[i:i+n])))
		i += n
	}
	if i+4 > len(msg) {
		return "", 0, 0, errors.New("short question")
	}
	if binary.BigEndian.Uint16(msg[i+2:]) != classIN {
		return "", 0, 0, errors.New("not class IN")
	}
	return strings.Join(labels, "."), binary.BigEndian.Uint16(msg[i:]), i + 4, nil
}

func answer(query []byte, end int, rcode int, ips []net.IP, ttl uint32) []byte {
	out := make([]byte, 0, end+16*len(ips))
	out = append(out, query[:end]...)
	flags := binary.BigEndian.Uint16(query[2:])
	flags = 0x8000 | flags&0x7900 | 0x0400 | 0x0080 | uint16(rcode) // QR, opcode+RD kept, AA, RA
	binary.BigEndian.PutUint16(out[2:], flags)
	if end == 12 {
		binary.BigEndian.PutUint16(out[4:], 0)
	}
	binary.BigEndian.PutUint16(out[6:], uint16(len(ips)))
	binary.BigEndian.PutUint16(out[8:], 0)
	binary.BigEndian.PutUint16(out[10:], 0)
	for _, ip := range ips {
		out = append(out, 0xc0, 12, 0, typeA, 0, classIN)
		out = binary.BigEndian.AppendUint32(out, ttl)
		out = append(out, 0, 4)
		out = append(out, ip...)
	}
	return out
}

func main() {
	listen := flag.String("listen", "127.0.0.1:53", "UDP address to answer on")
	server := flag.String("server", "", "the API server's URL")
	caFile := flag.String("ca", "", "the API server's CA certificates (PEM)")
	tokenFile := flag.String("token-file", "", "a file holding a bearer token that may read services and endpointslices")
	domain := flag.String("domain", "cluster.local", "the cluster's DNS domain")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	ca, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		log.Fatalf("%s: no certificate", *caFile)
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		log.Fatal(err)
	}
	a := &api{server: strings.TrimSuffix(*server, "/"), token: strings.TrimSpace(string(token)), client: &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("clusterdns: answering *.svc.%s on %s", *domain, pc.LocalAddr())
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		query := append([]byte(nil), buf[:n]...)
		go func() {
			name, qtype, end, err := question(query)
			if err != nil {
				if len(query) >= 12 {
					pc.WriteTo(answer(query, 12, rcodeNI, nil, 0), from)
				}
				return
			}
			ips, exists, err := a.lookup(name, *domain)
			rcode := rcodeOK
			switch {
			case err != nil:
				log.Printf("%s: %v", name, err)
				rcode, ips = rcodeFail, nil
			case !exists:
				rcode = rcodeNX
			case qtype != typeA:
				ips = nil
			}
			log.Printf("%s type %d: rcode %d %v", name, qtype, rcode, ips)
			pc.WriteTo(answer(query, end, rcode, ips, 5), from)
		}()
	}
}
