//go:build !unix

package miniotest

import (
	"os/exec"
	"syscall"
)

func procAttr() *syscall.SysProcAttr { return nil }

// killProcessGroup kills the process cmd started.
func killProcessGroup(cmd *exec.Cmd) { cmd.Process.Kill() }
