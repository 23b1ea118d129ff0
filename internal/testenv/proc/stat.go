package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// Stat is what the load, scale, fault and dev programs read from /proc/<pid>/stat
// (Linux).
type Stat struct {
	// Comm is the command name (the binary's base name, at most 15 bytes).
	Comm string
	// State is the process's (or thread's) state: 'R' running, 'S' sleeping, 'T'
	// stopped, 't' stopped by a tracer, 'Z' a zombie, and so on.
	State byte
	// PPID is the parent's pid.
	PPID int
	// CPU is the CPU time, user and system, the process has used so far.
	CPU time.Duration
	// StartTime is when the process started, in clock ticks after boot: it tells a
	// process from a later one given the same pid.
	StartTime uint64
}

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(string(b))
}

// ReadTaskStat reads /proc/<pid>/task/<tid>/stat, the stat of one thread.
func ReadTaskStat(pid, tid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(string(b))
}

// ParseStat parses the text of /proc/<pid>/stat. The command name, field 2, is in
// parentheses and may hold spaces and parentheses itself, so fields are counted from
// the last ')'.
func ParseStat(s string) (Stat, error) {
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return Stat{}, errors.New("malformed stat: no command name")
	}
	f := strings.Fields(s[closing+1:]) // f[0] is field 3 (state)
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, errors.New("malformed stat: too few fields")
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	start, err4 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Stat{}, fmt.Errorf("malformed stat: %w", err)
	}
	return Stat{Comm: s[open+1 : closing], State: f[0][0], PPID: ppid,
		CPU: time.Duration(utime+stime) * clockTick, StartTime: start}, nil
}
