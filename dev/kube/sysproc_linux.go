package kube

import "syscall"

// sysProcAttr puts each child in its own process group, so Stop can signal
// everything it forked, and asks the kernel to kill it if we die first: a
// crashed or interrupted test must not leave an apiserver holding ports.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process. The Go runtime only retires threads whose goroutine exits while
// locked to them, which this package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
