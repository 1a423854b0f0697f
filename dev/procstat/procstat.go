// Package procstat reads what Linux says of a process in /proc: its CPU
// time, resident memory and open files, for the benchmark and the load
// harness's reports.
package procstat

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat reads utime+stime, the parent and the command of pid. It assumes
// USER_HZ is 100, as on every Linux this runs on.
func Stat(pid int) (cpu time.Duration, ppid int, comm string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, "", false
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return 0, 0, "", false
	}
	comm = s[open+1 : close]
	f := strings.Fields(s[close+1:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, "", false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, ppid, comm, true
}

// RSSKB is pid's resident set (VmRSS) in KiB; 0 if it cannot be read.
func RSSKB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// FDs is how many files pid holds open; -1 if it cannot be read.
func FDs(pid int) int {
	e, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(e)
}
