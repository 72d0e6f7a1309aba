//go:build !unix

package checkpoint

import (
	"os/exec"
	"syscall"
)

func minioProcAttr() *syscall.SysProcAttr { return nil }

// killProcessGroup kills the process cmd started.
func killProcessGroup(cmd *exec.Cmd) { cmd.Process.Kill() }
