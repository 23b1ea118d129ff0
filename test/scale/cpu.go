package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

// cpuSample is the CPU time (user and system) used so far by each of the processes this
// program started, by command name (kube-apiserver, etcd, manager, token-server; any
// other child, such as a -manager-bin of another name, under "other"), and under
// "clients" by this program, whose client goroutines make the writes.
type cpuSample map[string]time.Duration

// cpuNames are the processes a cpuSample reports, in order.
var cpuNames = []string{"kube-apiserver", "etcd", "manager", "token-server", "other", "clients"}

// sampleCPU reads the CPU times of this program and of its children (other sessions'
// control planes on the machine are not its children).
func sampleCPU() cpuSample {
	s := cpuSample{}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s["clients"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err != nil || st.PPID != os.Getpid() {
			continue // gone meanwhile, or not ours
		}
		name := st.Comm
		if !slices.Contains(cpuNames, name) || name == "clients" {
			name = "other"
		}
		s[name] += st.CPU
	}
	return s
}

// used is the CPU the process name used between earlier and s. A process that restarted in
// between (its counter went down) is left out.
func (s cpuSample) used(earlier cpuSample, name string) time.Duration {
	return max(s[name]-earlier[name], 0)
}

// total is the CPU all processes used between earlier and s.
func (s cpuSample) total(earlier cpuSample) time.Duration {
	var sum time.Duration
	for _, name := range cpuNames {
		sum += s.used(earlier, name)
	}
	return sum
}

// per states the CPU each process used between s and later over n, e.g. n writes or
// n credentials issued, for the processes that used any, and all of them together.
func (s cpuSample) per(later cpuSample, n int, what string) string {
	ms := func(d time.Duration) string {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(n)/float64(time.Millisecond))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CPU per %s:", what)
	for _, name := range cpuNames {
		if d := later.used(s, name); d > 0 {
			fmt.Fprintf(&b, " %s %s,", name, ms(d))
		}
	}
	fmt.Fprintf(&b, " all %s", ms(later.total(s)))
	return b.String()
}
