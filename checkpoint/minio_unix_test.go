//go:build unix && !linux

package checkpoint

import (
	"os/exec"
	"syscall"
)

// minioProcAttr puts MinIO in a process group of its own, so that stopping
// it stops its children too.
func minioProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killProcessGroup kills the process group cmd leads.
func killProcessGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
