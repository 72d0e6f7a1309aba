package nn

import (
	"syscall"
	"unsafe"
)

// blockSignals blocks every asynchronous signal on the calling (locked) OS
// thread and returns the previous mask. OpenMP's worker threads, which
// libgomp creates from the thread that first runs a parallel region, inherit
// the mask: they are not Go threads, and a signal delivered to one (SIGPROF
// of a CPU profile, for one) would crash the process. Synchronous faults
// (SIGSEGV, SIGBUS, SIGFPE, SIGILL) stay unblocked.
func blockSignals() uint64 {
	set := ^uint64(0)
	for _, s := range []syscall.Signal{syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL} {
		set &^= 1 << (uint(s) - 1)
	}
	var old uint64
	sigprocmask(&set, &old)
	return old
}

func restoreSignals(old uint64) { sigprocmask(&old, nil) }

func sigprocmask(set, old *uint64) {
	const sigSetmask = 2
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigSetmask, uintptr(unsafe.Pointer(set)), uintptr(unsafe.Pointer(old)), 8, 0, 0); e != 0 {
		panic("nn: rt_sigprocmask: " + e.Error())
	}
}
