// Package cluster is the wire protocol between a tinct coordinator and its
// workers: cluster.proto and its generated code, mutual TLS under the
// cluster CA, the shared-secret authentication of sessions, the encoding
// of float vectors, replica checksums, the memberlist set-up both sides
// share, and the reporting of junk on cluster ports.
package cluster

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative cluster.proto

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// Sessions are authenticated in the stream itself, by challenge and
// response bound to everything that makes a session what it is:
//
//	coordinator → Challenge{c}           c: 32 fresh random bytes
//	worker      → Hello{name, instance, n, mac}
//	              mac   = HMAC(secret, "worker"      ‖ method ‖ name ‖ instance ‖ c ‖ n ‖ channel)
//	coordinator → Welcome{…, proof}
//	              proof = HMAC(secret, "coordinator" ‖ method ‖ name ‖ instance ‖ n ‖ c ‖ channel)
//
// with every field length-prefixed and channel the TLS exporter of the
// connection (Binding; empty on plaintext). A captured Hello is worthless
// anywhere else: another coordinator, or this one after a restart, sends
// another challenge; another connection has another exporter; another
// name or method changes the MAC. The worker checks the proof, so it takes
// its configuration and state only from a coordinator that knows the
// secret. The secret never crosses the wire.

// NonceLen is the length of challenges and nonces.
const NonceLen = 32

// ErrAuth is returned for a session without valid proof of the secret.
var ErrAuth = errors.New("cluster: authentication failed")

// Nonce returns NonceLen fresh random bytes.
func Nonce() []byte {
	n := make([]byte, NonceLen)
	_, _ = rand.Read(n) // crypto/rand.Read does not fail on supported platforms
	return n
}

// SessionAuth is what one session's proofs are bound to.
type SessionAuth struct {
	Secret    []byte
	Method    string // the gRPC method, e.g. Coordinator_Session_FullMethodName
	Name      string // the worker's name
	Instance  string // the worker process's random instance id
	Challenge []byte // the coordinator's
	Nonce     []byte // the worker's
	Channel   []byte // Binding of the connection
}

// WorkerMAC is the worker's answer to the challenge.
func (a SessionAuth) WorkerMAC() []byte {
	return a.mac("tinct/cluster/v2 worker", a.Challenge, a.Nonce)
}

// CoordinatorProof is the coordinator's proof in its Welcome.
func (a SessionAuth) CoordinatorProof() []byte {
	return a.mac("tinct/cluster/v2 coordinator", a.Nonce, a.Challenge)
}

// Check reports whether got is the worker's valid answer.
func (a SessionAuth) Check(got []byte) bool {
	return len(a.Challenge) == NonceLen && len(a.Nonce) == NonceLen && hmac.Equal(got, a.WorkerMAC())
}

// CheckProof reports whether got is the coordinator's valid proof.
func (a SessionAuth) CheckProof(got []byte) bool {
	return hmac.Equal(got, a.CoordinatorProof())
}

func (a SessionAuth) mac(label string, first, second []byte) []byte {
	h := hmac.New(sha256.New, a.Secret)
	for _, f := range [][]byte{[]byte(label), []byte(a.Method), []byte(a.Name), []byte(a.Instance), first, second, a.Channel} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}
