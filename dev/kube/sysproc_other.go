//go:build unix && !linux

package kube

import "syscall"

// sysProcAttr puts the build script in its own process group so cancelling
// kills everything it forked. Without Pdeathsig, the script outlives a
// parent that dies first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
