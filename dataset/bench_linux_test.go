package dataset

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// dropPageCache asks the kernel to drop the cached pages of the files at
// paths (clean pages only: the shard writer syncs), so that the next read
// comes from the disk, or from whatever cache lies below the VM.
func dropPageCache(b *testing.B, paths []string) bool {
	b.Helper()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	return true
}
