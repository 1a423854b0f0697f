package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// takeTerminal makes this process the terminal's foreground process group,
// when it runs in the foreground of one, so that Ctrl-C reaches it alone.
// Under make, the terminal's SIGINT would reach make too, which then dies
// of it and reports an error however cleanly this process stops. The
// returned func gives the terminal back. Without a terminal (CI, a signal
// sent to the whole group) nothing changes.
func takeTerminal() (giveBack func()) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return func() {}
	}
	fd := int(tty.Fd())
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || fg != unix.Getpgrp() {
		tty.Close()
		return func() {}
	}
	// A process group that is not the foreground one is stopped by
	// SIGTTOU when it changes the foreground; and Ctrl-Z would stop this
	// process while make, still waiting, keeps the shell from noticing.
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTSTP)
	if err := unix.Setpgid(0, 0); err != nil {
		tty.Close()
		return func() {}
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpid()); err != nil {
		_ = unix.Setpgid(0, fg)
		tty.Close()
		return func() {}
	}
	return func() {
		_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, fg)
		tty.Close()
	}
}
