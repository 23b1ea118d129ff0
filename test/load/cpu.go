package main

import (
	"syscall"
	"time"

	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
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
	if st, err := proc.ReadStat(serverPID); err == nil {
		t.server = st.CPU
	}
	return t
}

func (t cpuTimes) sub(u cpuTimes) cpuTimes { return cpuTimes{t.client - u.client, t.server - u.server} }

func (t cpuTimes) total() time.Duration { return t.client + t.server }
