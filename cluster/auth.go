// Package cluster is the wire protocol between a tinct coordinator and its
// workers: cluster.proto and its generated code, the shared-secret
// authentication of calls, the encoding of float vectors, replica
// checksums, and the memberlist set-up both sides share.
package cluster

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative cluster.proto

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
)

// MaxSkew is how far a call's timestamp may be from the server's clock.
const MaxSkew = 2 * time.Minute

const (
	mdTime  = "tinct-time"
	mdNonce = "tinct-nonce"
	mdMAC   = "tinct-mac"
)

// ErrAuth is returned for a call without valid proof of the secret.
var ErrAuth = errors.New("cluster: authentication failed")

func callMAC(secret []byte, ts, nonce string) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("tinct-cluster-call-v1\n" + ts + "\n" + nonce))
	return hex.EncodeToString(h.Sum(nil))
}

// Creds are gRPC per-call credentials: each call carries a timestamp, a
// fresh nonce and their HMAC-SHA256 under the cluster secret (never the
// secret itself).
type Creds struct{ Secret []byte }

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c Creds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	nonce := hex.EncodeToString(n[:])
	return map[string]string{mdTime: ts, mdNonce: nonce, mdMAC: callMAC(c.Secret, ts, nonce)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (Creds) RequireTransportSecurity() bool { return false }

// Verifier checks the proof Creds attach, refusing replays of a nonce.
type Verifier struct {
	Secret []byte
	mu     sync.Mutex
	seen   map[string]time.Time
}

// Verify checks the incoming metadata of a call.
func (v *Verifier) Verify(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if vs := md.Get(k); len(vs) == 1 {
			return vs[0]
		}
		return ""
	}
	ts, nonce, mac := get(mdTime), get(mdNonce), get(mdMAC)
	if ts == "" || nonce == "" || mac == "" {
		return fmt.Errorf("%w: no credentials on the call", ErrAuth)
	}
	ns, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad timestamp", ErrAuth)
	}
	now := time.Now()
	if d := now.Sub(time.Unix(0, ns)); d > MaxSkew || d < -MaxSkew {
		return fmt.Errorf("%w: timestamp %v off the server's clock", ErrAuth, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(mac), []byte(callMAC(v.Secret, ts, nonce))) {
		return fmt.Errorf("%w: wrong secret", ErrAuth)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = map[string]time.Time{}
	}
	for k, t := range v.seen {
		if now.Sub(t) > 2*MaxSkew {
			delete(v.seen, k)
		}
	}
	if _, dup := v.seen[nonce]; dup {
		return fmt.Errorf("%w: replayed nonce", ErrAuth)
	}
	v.seen[nonce] = now
	return nil
}
