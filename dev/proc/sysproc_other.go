//go:build unix && !linux

package proc

import "syscall"

// sysProcAttr puts each child in its own process group so Stop can signal
// everything it forked. Without Pdeathsig, children outlive a parent that
// dies without calling Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
