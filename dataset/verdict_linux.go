package dataset

import (
	"os"
	"syscall"
)

// fileKey returns the identity of the file whose status is st and the
// stamp that any change to its content moves.
func fileKey(st os.FileInfo) (fileID, fileStamp, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fileStamp{}, false
	}
	msec, mnsec := sys.Mtim.Unix()
	csec, cnsec := sys.Ctim.Unix()
	return fileID{dev: uint64(sys.Dev), ino: uint64(sys.Ino)},
		fileStamp{size: sys.Size, mtime: msec*1e9 + mnsec, ctime: csec*1e9 + cnsec}, true
}
