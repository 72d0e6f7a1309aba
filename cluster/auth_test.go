package cluster

import (
	"bytes"
	"testing"
)

func testAuth() SessionAuth {
	return SessionAuth{Secret: []byte("s"), Method: Coordinator_Session_FullMethodName, Name: "w0", Instance: "i",
		Challenge: bytes.Repeat([]byte{1}, NonceLen), Nonce: bytes.Repeat([]byte{2}, NonceLen), Channel: []byte("tls")}
}

// TestSessionAuthBindsEverything: the worker's MAC verifies for its own
// session only; changing any field it is bound to refuses it, and the
// coordinator's proof is not the worker's MAC.
func TestSessionAuthBindsEverything(t *testing.T) {
	a := testAuth()
	mac := a.WorkerMAC()
	if !a.Check(mac) {
		t.Fatal("a genuine MAC is refused")
	}
	if a.Check(a.CoordinatorProof()) || a.CheckProof(mac) {
		t.Error("the worker's MAC and the coordinator's proof are interchangeable")
	}
	for name, mod := range map[string]func(*SessionAuth){
		"secret":    func(b *SessionAuth) { b.Secret = []byte("t") },
		"method":    func(b *SessionAuth) { b.Method = "/other" },
		"name":      func(b *SessionAuth) { b.Name = "w1" },
		"instance":  func(b *SessionAuth) { b.Instance = "j" },
		"challenge": func(b *SessionAuth) { b.Challenge = bytes.Repeat([]byte{3}, NonceLen) },
		"nonce":     func(b *SessionAuth) { b.Nonce = bytes.Repeat([]byte{4}, NonceLen) },
		"channel":   func(b *SessionAuth) { b.Channel = []byte("other connection") },
		// length prefixes: moving a byte between fields changes the MAC
		"boundary": func(b *SessionAuth) { b.Name, b.Instance = "w0i", "" },
	} {
		b := testAuth()
		mod(&b)
		if b.Check(mac) {
			t.Errorf("a MAC made for another %s is accepted", name)
		}
	}
	short := testAuth()
	short.Nonce = short.Nonce[:8]
	if short.Check(short.WorkerMAC()) {
		t.Error("a nonce shorter than NonceLen is accepted")
	}
}

// FuzzSessionAuth: whatever a stranger sends as Hello, it is accepted only
// when its MAC is the one the secret gives for exactly those fields.
func FuzzSessionAuth(f *testing.F) {
	a := testAuth()
	f.Add(a.Name, a.Instance, a.Nonce, a.WorkerMAC())
	f.Add("", "", []byte{}, []byte{})
	f.Add("w0", "i", a.Nonce, a.CoordinatorProof())
	f.Fuzz(func(t *testing.T, name, instance string, nonce, mac []byte) {
		b := testAuth()
		b.Name, b.Instance, b.Nonce = name, instance, nonce
		ok := b.Check(mac)
		want := len(nonce) == NonceLen && bytes.Equal(mac, b.WorkerMAC())
		if ok != want {
			t.Fatalf("Check = %t, want %t", ok, want)
		}
		if ok && (name != a.Name || instance != a.Instance || !bytes.Equal(nonce, a.Nonce)) && bytes.Equal(mac, a.WorkerMAC()) {
			t.Fatal("one MAC verifies for two different Hellos")
		}
	})
}
