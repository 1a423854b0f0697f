package kubelet

import "syscall"

// sysProcAttr asks the kernel to kill a container or exec process if the
// node dies first, as dev/proc does for the node itself.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process. The Go runtime only retires threads whose goroutine exits while
// locked to them, which this package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
