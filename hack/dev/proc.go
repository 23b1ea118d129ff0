package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

// What this file reads from /proc (Linux): a process's parent, start time and binary, and
// which processes hold a listening TCP socket on a port (the sockets from proc.TCPSockets).

// procStat returns the parent pid and the start time (clock ticks after boot, field 22 of
// /proc/<pid>/stat) of a process. The start time tells a process from a later one that
// was given the same pid.
func procStat(pid int) (ppid int, start uint64, err error) {
	st, err := proc.ReadStat(pid)
	return st.PPID, st.StartTime, err
}

// procExe returns the binary a process runs. A binary replaced or removed since the
// process started reads "<path> (deleted)"; the path is what is returned.
func procExe(pid int) (string, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return strings.TrimSuffix(exe, " (deleted)"), err
}

// procArgs returns a process's command line.
func procArgs(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
}

// pids returns the pids of the processes this program can see.
func pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// child is what identifies one of this program's children: the binary it runs (absolute,
// symlinks resolved) and one argument it was given.
type child struct{ exe, arg string }

// children returns the pids of this program's child processes that are one of those
// wanted.
func children(wanted ...child) map[child][]int {
	self := os.Getpid()
	found := map[child][]int{}
	for _, pid := range pids() {
		if ppid, _, err := procStat(pid); err != nil || ppid != self {
			continue
		}
		exe, err := procExe(pid)
		if err != nil {
			continue
		}
		args, err := procArgs(pid)
		if err != nil {
			continue
		}
		for _, w := range wanted {
			if exe == w.exe && slices.Contains(args, w.arg) {
				found[w] = append(found[w], pid)
			}
		}
	}
	return found
}

// listenerInodes returns the socket inodes of the TCP sockets (IPv4 and IPv6) listening
// on a port.
func listenerInodes(port int) map[string]bool {
	inodes := map[string]bool{}
	for _, s := range proc.TCPSockets(port) {
		if s.State == proc.TCPListen {
			inodes[s.Inode] = true
		}
	}
	return inodes
}

// holdsSocket reports whether a process has one of the socket inodes open.
func holdsSocket(pid int, inodes map[string]bool) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true
		}
	}
	return false
}

// listensOn reports whether a process holds a listening socket on port: the proof that
// what answers there is that process and not another one.
func listensOn(pid, port int) bool {
	inodes := listenerInodes(port)
	return len(inodes) > 0 && holdsSocket(pid, inodes)
}

// portHolder describes the process listening on port, "pid 1234 (/path/to/binary)", or
// returns "" when there is none this user can see.
func portHolder(port int) string {
	inodes := listenerInodes(port)
	if len(inodes) == 0 {
		return ""
	}
	for _, pid := range pids() {
		if !holdsSocket(pid, inodes) {
			continue
		}
		exe, _ := procExe(pid)
		return fmt.Sprintf("pid %d (%s)", pid, cmp.Or(exe, "unknown binary"))
	}
	return ""
}
