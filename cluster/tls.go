package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tinct/tinct/internal/tlsbind"
)

// A node's TLS material is a directory laid out like a Kubernetes TLS
// secret (what cert-manager writes), so a mounted secret can be used as is.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	caKey    = "ca.key"
)

// Security is how a node's gRPC connections are protected: mutual TLS under
// the cluster CA, or — only when asked for, and only on loopback —
// plaintext.
type Security struct {
	tls *tls.Config // nil: plaintext
}

// LoadTLS reads dir/ca.crt, dir/tls.crt and dir/tls.key. Every connection
// then uses TLS 1.3 with certificates checked both ways against the CA: a
// node presents its certificate as server and as client. Host names are
// not checked: the CA is the cluster's own, so a certificate from it is
// what makes a node a member, wherever it runs. That lets one certificate
// serve every worker of a StatefulSet or a compose scale-out, whose
// addresses are not known when the certificate is made.
func LoadTLS(dir string) (*Security, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("cluster TLS: %w (make the files with tinct cluster certs)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster TLS: %s holds no PEM certificate", filepath.Join(dir, CAFile))
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("cluster TLS: %s, %s: %w", filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), err)
	}
	return &Security{tls: &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// the server's chain is checked below, against the CA only
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster TLS: the peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if err != nil {
				return fmt.Errorf("cluster TLS: the peer's certificate is not from this cluster's CA: %w", err)
			}
			return nil
		},
	}}, nil
}

// Plaintext is no protection of the traffic at all; Check refuses it for
// any address that is not a loopback one.
func Plaintext() *Security { return &Security{} }

// Encrypted reports whether connections use TLS.
func (s *Security) Encrypted() bool { return s.tls != nil }

// Check refuses plaintext for addresses other than loopback ones: cluster
// traffic carries the weights, the optimiser state and the configuration.
func (s *Security) Check(addrs ...string) error {
	if s.tls != nil {
		return nil
	}
	for _, a := range addrs {
		if !Loopback(a) {
			return fmt.Errorf("plaintext cluster traffic is allowed on loopback addresses only, not %q: use --tls-dir (tinct cluster certs makes the files)", a)
		}
	}
	return nil
}

// Loopback reports whether addr (host or host:port) names this machine
// only: an IP literal that is a loopback address, or a name every one of
// whose addresses is (localhost too is resolved: a hosts file may map it
// elsewhere). An empty host (every interface) or a name that does not
// resolve is not.
func Loopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip != nil || host == "" {
		return ip != nil && ip.IsLoopback()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := lookupIP(ctx, host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// lookupIP resolves a host name (tests replace it).
var lookupIP = func(ctx context.Context, host string) ([]net.IP, error) {
	return net.DefaultResolver.LookupIP(ctx, "ip", host)
}

// Creds are the gRPC transport credentials for servers and clients alike.
// Handshakes that fail on a server are reported to junk when it is set.
func (s *Security) Creds(junk *Junk) credentials.TransportCredentials {
	var c credentials.TransportCredentials
	if s.tls == nil {
		c = insecure.NewCredentials()
	} else {
		c = credentials.NewTLS(s.tls)
	}
	if junk == nil {
		return c
	}
	return &loggedCreds{TransportCredentials: c, junk: junk}
}

// Binding is the channel binding of the connection a call arrived on (or
// was made on): a TLS 1.3 exporter value unique to that connection, so that
// a proof computed for one connection is worthless on any other. It is nil
// for plaintext connections.
func Binding(ctx context.Context) []byte { return tlsbind.Of(ctx, "EXPORTER-tinct-cluster-v2") }

// loggedCreds reports failed server handshakes (junk or strangers on the
// port) instead of letting gRPC drop them silently.
type loggedCreds struct {
	credentials.TransportCredentials
	junk *Junk
}

func (l *loggedCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := l.TransportCredentials.ServerHandshake(c)
	if err != nil {
		l.junk.Report(c.RemoteAddr().String(), "TLS handshake failed: "+err.Error())
	}
	return conn, info, err
}

func (l *loggedCreds) Clone() credentials.TransportCredentials {
	return &loggedCreds{TransportCredentials: l.TransportCredentials.Clone(), junk: l.junk}
}

// CertOptions say what MakeCerts writes.
type CertOptions struct {
	Out   string     // directory
	Nodes [][]string // per node: its names (DNS names or IP addresses); the first names its folder
	Valid time.Duration
	Now   time.Time
}

// MakeCerts writes a cluster CA (Out/ca.crt, Out/ca.key; an existing pair
// is reused, so nodes can be added later) and, for each node, Out/NAME/
// with ca.crt, tls.crt and tls.key: an ECDSA P-256 certificate for the
// node's names, usable as server and as client. It returns the node
// folders.
func MakeCerts(o CertOptions) ([]string, error) {
	if len(o.Nodes) == 0 {
		return nil, errors.New("no --host given: name each node (its DNS name or IP address as the others reach it)")
	}
	if o.Valid <= 0 {
		o.Valid = 365 * 24 * time.Hour
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if err := os.MkdirAll(o.Out, 0o700); err != nil {
		return nil, err
	}
	ca, caPriv, err := loadOrMakeCA(o)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	var dirs []string
	for _, names := range o.Nodes {
		if len(names) == 0 || names[0] == "" {
			return nil, errors.New("empty --host")
		}
		tmpl, err := template(names[0], o)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if n != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &priv.PublicKey, caPriv)
		if err != nil {
			return nil, fmt.Errorf("certificate for %s: %w", names[0], err)
		}
		dir := filepath.Join(o.Out, strings.NewReplacer(":", "_", "/", "_").Replace(names[0]))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		if err := writeFiles(dir, map[string][]byte{
			CAFile:   caPEM,
			CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		}); err != nil {
			return nil, err
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

func template(cn string, o CertOptions) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"tinct cluster"}},
		NotBefore:    o.Now.Add(-time.Hour),
		NotAfter:     o.Now.Add(o.Valid),
	}, nil
}

func loadOrMakeCA(o CertOptions) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(o.Out, CAFile), filepath.Join(o.Out, caKey)
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		priv, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("%s: not an ECDSA key", keyPath)
		}
		ca, err := x509.ParseCertificate(pair.Certificate[0])
		return ca, priv, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("existing CA in %s: %w", o.Out, err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := template("tinct cluster CA", o)
	if err != nil {
		return nil, nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFiles(o.Out, map[string][]byte{
		CAFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		caKey:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, priv, err
}

// writeFiles writes each file readable by its owner only.
func writeFiles(dir string, files map[string][]byte) error {
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
