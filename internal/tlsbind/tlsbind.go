// Package tlsbind gives the channel binding of a gRPC connection: a value
// from the TLS 1.3 exporter (RFC 8446 §7.5) that only the two ends of that
// one connection know, so that a proof computed for it is worthless on any
// other connection.
package tlsbind

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Of returns label's exporter value for the connection a call arrived on
// or was made on (a stream's context on either side), or nil when the
// connection is not TLS.
func Of(ctx context.Context, label string) []byte {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	b, err := info.State.ExportKeyingMaterial(label, nil, 32)
	if err != nil {
		return nil
	}
	return b
}
