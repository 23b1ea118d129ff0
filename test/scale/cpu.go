package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time (user and system) used so far by each of the processes this
// program started, by command name (kube-apiserver, etcd, manager, token-server), and
// under "clients" by this program, whose client goroutines make the writes.
type cpuSample map[string]time.Duration

// cpuNames are the processes a cpuSample reports, in order.
var cpuNames = []string{"kube-apiserver", "etcd", "manager", "token-server", "clients"}

// sampleCPU reads the CPU times of this program and of its children (other sessions'
// control planes on the machine are not its children).
func sampleCPU() cpuSample {
	s := cpuSample{}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s["clients"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15): comm may hold spaces, so the
		// fields are counted from its closing parenthesis.
		line := string(data)
		open, closing := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || closing < open {
			continue
		}
		comm, fields := line[open+1:closing], strings.Fields(line[closing+1:])
		if len(fields) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid != os.Getpid() {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		s[comm] += time.Duration(utime+stime) * clockTick
	}
	return s
}

// total is the CPU all processes used between earlier and s (a process that restarted
// in between is left out).
func (s cpuSample) total(earlier cpuSample) time.Duration {
	var sum time.Duration
	for _, name := range cpuNames {
		if d := s[name] - earlier[name]; d > 0 {
			sum += d
		}
	}
	return sum
}

// per states the CPU each process used between s and later over n, e.g. n writes or
// n credentials issued, for the processes that used any. A process that restarted in
// between (its counter went down) is left out.
func (s cpuSample) per(later cpuSample, n int, what string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU per %s:", what)
	var sum time.Duration
	for _, name := range cpuNames {
		d := later[name] - s[name]
		if d <= 0 {
			continue
		}
		sum += d
		fmt.Fprintf(&b, " %s %.2f ms,", name, float64(d)/float64(n)/float64(time.Millisecond))
	}
	fmt.Fprintf(&b, " all %.2f ms", float64(sum)/float64(n)/float64(time.Millisecond))
	return b.String()
}
