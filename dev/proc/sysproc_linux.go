package proc

import "syscall"

// sysProcAttr puts each child in its own process group, so Stop can signal
// everything it forked, and asks the kernel to kill it if we die first: a
// crashed or interrupted test must not leave an apiserver holding ports.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process. The Go runtime only retires threads whose goroutine exits while
// locked to them (runtime.LockOSThread without UnlockOSThread), so do not
// call Start from such a goroutine: its children would die with it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
