package fuzzcheck

import "testing"

var sink []byte

func TestAllocatedBytes(t *testing.T) {
	if n := AllocatedBytes(func() { sink = make([]byte, 10<<20) }); n < 10<<20 || n > 11<<20 {
		t.Errorf("a 10 MiB allocation measured as %d bytes", n)
	}
	if n := AllocatedBytes(func() {}); n > 256<<10 {
		t.Errorf("nothing measured as %d bytes", n)
	}
}
