//go:build unix && !linux

package miniotest

import (
	"os/exec"
	"syscall"
)

// procAttr puts MinIO in a process group of its own, so that stopping it
// stops its children too.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killProcessGroup kills the process group cmd leads.
func killProcessGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
