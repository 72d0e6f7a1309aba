package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// GossipKey derives memberlist's AES-256 key from the cluster secret.
func GossipKey(secret []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("tinct-memberlist-key-v1"))
	return h.Sum(nil)
}

// GossipProfiles are memberlist's preset timings: lan (the default: a data
// centre network, a dead node noticed in a few seconds), wan (slower,
// lossy links) and local (loopback only: tests and one-machine demos).
var GossipProfiles = []string{"lan", "wan", "local"}

// GossipOptions set up one member of the membership gossip.
type GossipOptions struct {
	Name    string // unique in the cluster
	Bind    string // host:port; port 0 picks one
	Secret  []byte // the cluster secret (the gossip is encrypted with a key derived from it)
	Profile string // one of GossipProfiles; "" is lan
	// Advertise is the host others reach this member at (a name or an IP;
	// "": Bind's host, or this machine's address when Bind's is 0.0.0.0)
	Advertise string
	Events    memberlist.EventDelegate
	Log       *slog.Logger
}

// BindIP is the IP literal a bind address's host stands for, as memberlist
// needs it (it takes a name it cannot parse for every interface): an IP or
// "" (every interface) as it is, "localhost" 127.0.0.1, another name the one
// address it resolves to (several are refused: say which).
func BindIP(host string) (string, error) {
	switch {
	case host == "" || net.ParseIP(host) != nil:
		return host, nil
	case host == "localhost":
		return "127.0.0.1", nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", err
	}
	if len(ips) != 1 {
		return "", fmt.Errorf("%s resolves to %v: give one address", host, ips)
	}
	return ips[0].String(), nil
}

// StartGossip creates a memberlist member with the profile's timings.
func StartGossip(o GossipOptions) (*memberlist.Memberlist, error) {
	host, port, err := net.SplitHostPort(o.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", o.Bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", o.Bind, err)
	}
	var mc *memberlist.Config
	switch o.Profile {
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
	case "wan":
		mc = memberlist.DefaultWANConfig()
	case "local":
		mc = memberlist.DefaultLocalConfig()
	default:
		return nil, fmt.Errorf("gossip profile %q: want one of %v", o.Profile, GossipProfiles)
	}
	if host, err = BindIP(host); err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", o.Bind, err)
	}
	mc.Name = o.Name
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = host, p, p
	if o.Advertise != "" {
		if mc.AdvertiseAddr, err = AdvertiseIP(o.Advertise); err != nil {
			return nil, err
		}
	}
	mc.SecretKey = GossipKey(o.Secret)
	mc.Events = o.Events
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	// memberlist's own errors and warnings — among them junk on the
	// gossip port, which it otherwise drops — are warnings here, at most
	// one per 10 s; its chatter is debug output
	junk := &Junk{Log: log, Port: o.Bind, Msg: "memberlist (gossip)"}
	mc.Logger = stdlog.New(&gossipLog{log: log, junk: junk}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("memberlist on %s: %w", o.Bind, err)
	}
	return ml, nil
}

// gossipLog routes memberlist's log lines ("[LEVEL] memberlist: …").
type gossipLog struct {
	log  *slog.Logger
	junk *Junk
}

func (g *gossipLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	// a send that races memberlist's own shutdown fails on the closed
	// socket: not a fault
	if (bytes.HasPrefix(p, []byte("[ERR]")) || bytes.HasPrefix(p, []byte("[WARN]"))) && !bytes.Contains(p, []byte(net.ErrClosed.Error())) {
		g.junk.Report("", line)
	} else {
		g.log.Debug(line)
	}
	return len(p), nil
}
