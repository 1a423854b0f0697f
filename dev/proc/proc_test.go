package proc

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcess(t *testing.T) {
	for _, tc := range []struct {
		name     string
		script   string
		stop     bool   // call Stop once the log has output
		code     int    // wanted ExitCode
		exitErr  string // substring of ExitError; "" to skip
		logLines string // wanted log content
	}{
		{name: "stopped", script: "echo hi; sleep 30", stop: true, code: -1, logLines: "hi\n"},
		{name: "exit 3", script: "echo one; echo two >&2; exit 3", code: 3, exitErr: "exit status 3", logLines: "one\ntwo\n"},
		{name: "port conflict", script: "echo 'bind: address already in use' >&2; exit 1", code: 1, exitErr: "address already in use", logLines: "bind: address already in use\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logDir := t.TempDir() + "/logs" // Start creates it
			p, err := Start("sh", "/bin/sh", logDir, nil, "-c", tc.script)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Stop(time.Second) })
			if p.LogPath != logDir+"/sh.log" {
				t.Errorf("LogPath = %s, want %s/sh.log", p.LogPath, logDir)
			}
			if tc.stop {
				waitFor(t, func() bool { return output(t, p) != "" })
				if p.Exited() || p.ExitCode() != -1 {
					t.Fatalf("Exited = %v, ExitCode = %d before Stop", p.Exited(), p.ExitCode())
				}
				if err := p.Stop(5 * time.Second); err != nil {
					t.Fatal(err)
				}
				// Stop signals the group, so sleep, forked by sh, dies too.
				// Stop only waits for sh; whoever inherits sleep reaps it
				// a moment later.
				waitFor(t, func() bool { return errors.Is(syscall.Kill(-p.Pid(), 0), syscall.ESRCH) })
				if err := p.Stop(time.Second); err != nil {
					t.Errorf("second Stop: %v", err)
				}
			}
			select {
			case <-p.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("process did not exit")
			}
			if !p.Exited() {
				t.Error("Exited = false after Done")
			}
			if got := p.ExitCode(); got != tc.code {
				t.Errorf("ExitCode = %d, want %d", got, tc.code)
			}
			if got := output(t, p); got != tc.logLines {
				t.Errorf("log = %q, want %q", got, tc.logLines)
			}
			if tc.exitErr != "" {
				err := p.ExitError()
				var exit *exec.ExitError
				if !strings.Contains(err.Error(), tc.exitErr) || !strings.Contains(err.Error(), strings.TrimSpace(tc.logLines)) || !errors.As(err, &exit) {
					t.Errorf("ExitError = %v, want %q, the log and an *exec.ExitError", err, tc.exitErr)
				}
			}
			if got, want := PortConflict(p.ExitError()), tc.name == "port conflict"; got != want {
				t.Errorf("PortConflict = %v, want %v", got, want)
			}
			if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
			}
		})
	}
}

// TestStopKills checks the SIGKILL after grace, for a child that ignores
// SIGTERM.
func TestStopKills(t *testing.T) {
	p, err := Start("stubborn", "/bin/sh", t.TempDir(), []string{"PATH=/usr/bin:/bin"}, "-c", "trap '' TERM; echo ready; while :; do sleep 1; done")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return output(t, p) != "" })
	start := time.Now()
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() || p.ExitCode() != -1 || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("Exited = %v, ExitCode = %d after %v", p.Exited(), p.ExitCode(), time.Since(start))
	}
}

// output is what the process wrote, after the line Start wrote first.
func output(t *testing.T, p *Process) string {
	t.Helper()
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	head, rest, _ := strings.Cut(string(b), "\n")
	if !strings.HasPrefix(head, "---- "+p.Name+" started ") {
		t.Fatalf("log does not begin with the start line: %q", b)
	}
	return rest
}

// A process started again under the same name appends to the log, so
// what its predecessor said is kept.
func TestRestartAppendsToTheLog(t *testing.T) {
	dir := t.TempDir()
	for _, word := range []string{"first", "second"} {
		p, err := Start("sh", "/bin/sh", dir, nil, "-c", "echo "+word)
		if err != nil {
			t.Fatal(err)
		}
		<-p.Done()
	}
	b, err := os.ReadFile(dir + "/sh.log")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 4 || lines[1] != "first" || lines[3] != "second" {
		t.Fatalf("log after two runs: %q", b)
	}
}

func TestTail(t *testing.T) {
	path := t.TempDir() + "/log"
	if err := os.WriteFile(path, []byte("a\nb\nc\nd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    int
		want string
	}{{1, "d"}, {2, "c\nd"}, {4, "a\nb\nc\nd"}, {10, "a\nb\nc\nd"}} {
		if got := Tail(path, tc.n); got != tc.want {
			t.Errorf("Tail(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// Ports come from below the ephemeral range, where no outgoing
// connection's source port can take them, distinct, and free.
func TestFreePorts(t *testing.T) {
	_, hi := portsBelowEphemeral()
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p >= hi {
			t.Fatalf("port %d: seen %v, ephemeral range from %d", p, seen[p], hi)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
