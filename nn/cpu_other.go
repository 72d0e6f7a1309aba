//go:build !amd64

package nn

func hasAVX512() bool { return false }
