package kube

import "syscall"

// sysProcAttr is for the build script EnsureBinaries runs; the control plane
// processes get theirs from package proc, for the same reasons. It puts the
// script in its own process group, so cancelling kills the go builds it
// forked too, and asks the kernel to kill it if we die first.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process. The Go runtime only retires threads whose goroutine exits while
// locked to them, which this package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
