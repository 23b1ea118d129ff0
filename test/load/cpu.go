package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes are the CPU times (user + system) the client (this process) and the server
// process have used so far, so that a load's CPU per request can be split between them.
// Linux only (the server's from /proc); elsewhere they read as zero.
type cpuTimes struct{ client, server time.Duration }

func cpuNow(serverPID int) cpuTimes {
	var t cpuTimes
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t.client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if serverPID == 0 {
		return t
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(serverPID) + "/stat")
	if err != nil {
		return t
	}
	// Fields after the command name (which may hold spaces, hence the last ')'): state is
	// the first, utime and stime the 12th and 13th, in clock ticks (USER_HZ, 100).
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return t
	}
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	t.server = time.Duration(u+st) * 10 * time.Millisecond
	return t
}

func (t cpuTimes) sub(u cpuTimes) cpuTimes { return cpuTimes{t.client - u.client, t.server - u.server} }

func (t cpuTimes) total() time.Duration { return t.client + t.server }
