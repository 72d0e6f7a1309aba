//go:build !linux

package dataset

import "testing"

// dropPageCache reports false: there is no portable way to drop a file's
// pages from the cache.
func dropPageCache(*testing.B, []string) bool { return false }
