package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The supervisor: every process of the environment is a component, recorded in a pid
// file in the dev directory as soon as it runs, and watched; the first one to exit on its
// own ends make dev. make dev starts kube-controller-manager, the manager and the token
// server itself, in process groups of their own (so that Ctrl-C reaches make dev first)
// with Pdeathsig. envtest starts etcd and kube-apiserver with Setpgid only, without
// Pdeathsig, so the supervisor finds them among its children and watches them through
// pidfds; pid files are how a later make dev stops them should this one be SIGKILLed.

const (
	// stopGrace is how long a component has to exit after SIGTERM before it is killed.
	stopGrace = 8 * time.Second
	// killWait is how long a killed process has to disappear.
	killWait = 5 * time.Second
)

// component is one process of the environment.
type component struct {
	name    string // names its files: <name>.log, <name>.pid
	what    string // names it in messages
	logPath string
	pid     int
	start   uint64 // start time, see procStat
	exe     string
	cmd     *exec.Cmd // nil for a process envtest started
	pidfd   int       // for a process envtest started
	done    chan struct{}
	err     error // how a process make dev started exited; read after done
}

// diedError is how make dev ends when a component exits on its own.
type diedError struct{ c *component }

func (e *diedError) Error() string {
	how := "exited"
	if e.c.err != nil {
		how = "exited (" + e.c.err.Error() + ")"
	}
	return fmt.Sprintf("%s (pid %d) %s; its log: %s", e.c.what, e.c.pid, how, e.c.logPath)
}

// supervisor keeps the components of one environment.
type supervisor struct {
	dir string
	// died is called, once per component, when a component exits before stopAll.
	died func(error)

	mu       sync.Mutex
	comps    []*component
	stopping bool
}

// start runs a binary as a component, its output in <dir>/<name>.log.
func (s *supervisor) start(name, what, path string, args ...string) (*component, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, errors.New("shutting down")
	}
	logPath := filepath.Join(s.dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", what, err)
	}
	c := &component{name: name, what: what, logPath: logPath, pid: cmd.Process.Pid, cmd: cmd, pidfd: -1, done: make(chan struct{})}
	recordErr := s.record(c)
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
		s.exited(c)
	}()
	return c, recordErr
}

// adopt watches a process that envtest started, a child of this program.
func (s *supervisor) adopt(name, what string, pid int, logPath string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.ContainsFunc(s.comps, func(c *component) bool { return c.pid == pid }) {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("watching %s (pid %d): %w", what, pid, err)
	}
	c := &component{name: name, what: what, logPath: logPath, pid: pid, pidfd: fd, done: make(chan struct{})}
	recordErr := s.record(c)
	go func() {
		waitPidfd(fd, -1)
		close(c.done)
		s.exited(c)
	}()
	return recordErr
}

// record keeps a component that runs, with its start time and binary, and writes its
// pid file. s.mu is held.
func (s *supervisor) record(c *component) error {
	_, c.start, _ = procStat(c.pid)
	c.exe, _ = procExe(c.pid)
	s.comps = append(s.comps, c)
	return writePidFile(s.dir, c)
}

// get returns the component of that name, or nil.
func (s *supervisor) get(name string) *component {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.comps {
		if c.name == name {
			return c
		}
	}
	return nil
}

// signalAdopted signals the processes envtest started that still run.
func (s *supervisor) signalAdopted(sig unix.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.comps {
		if c.cmd == nil && !waitDone(c.done, 0) {
			_ = unix.PidfdSendSignal(c.pidfd, sig, nil, 0)
		}
	}
}

func (s *supervisor) exited(c *component) {
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if !stopping {
		s.died(&diedError{c})
	}
}

// stopAll stops every component: first those make dev started, together, then the
// control plane through stopControlPlane (envtest's own stop), and then whatever of it
// still runs is killed. It returns once every component has exited, and removes the
// pid files of those that did.
func (s *supervisor) stopAll(stopControlPlane func() error) error {
	s.mu.Lock()
	s.stopping = true
	comps := slices.Clone(s.comps)
	s.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, c := range comps {
		if c.cmd != nil {
			wg.Go(func() {
				_ = c.cmd.Process.Signal(syscall.SIGTERM)
				if !waitDone(c.done, stopGrace) {
					_ = c.cmd.Process.Kill()
					waitDone(c.done, killWait)
				}
			})
		}
	}
	wg.Wait()
	if stopControlPlane != nil {
		if err := stopControlPlane(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
	}
	for _, c := range slices.Backward(comps) { // kube-apiserver before etcd
		if c.cmd == nil && !waitDone(c.done, 0) {
			_ = unix.PidfdSendSignal(c.pidfd, unix.SIGTERM, nil, 0)
			if !waitDone(c.done, stopGrace) {
				_ = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
				waitDone(c.done, killWait)
			}
		}
	}
	for _, c := range comps {
		if !waitDone(c.done, 0) {
			errs = append(errs, fmt.Errorf("%s (pid %d) did not stop", c.what, c.pid))
			continue
		}
		if c.cmd == nil {
			_ = unix.Close(c.pidfd)
		}
		_ = os.Remove(pidFilePath(s.dir, c.name))
	}
	return errors.Join(errs...)
}

// waitDone waits up to d for done to be closed; d < 0 waits for ever.
func waitDone(done <-chan struct{}, d time.Duration) bool {
	if d == 0 {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// waitPidfd waits until the process of a pidfd has exited, for up to d (d < 0: for
// ever), and reports whether it has. It does not reap the process.
func waitPidfd(fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		timeout := -1
		if d >= 0 {
			timeout = int(time.Until(deadline).Milliseconds())
			if timeout < 0 {
				timeout = 0
			}
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return false
		case n > 0:
			return true
		case d >= 0 && !time.Now().Before(deadline):
			return false
		}
	}
}

// realPath returns a binary's path as /proc/<pid>/exe reads it: absolute, symlinks
// resolved.
func realPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return p
}

// Pid files: <dir>/<name>.pid holds "<pid> <start time> <binary>", enough to tell the
// process from a later one given the same pid.

func pidFilePath(dir, name string) string { return filepath.Join(dir, name+".pid") }

func writePidFile(dir string, c *component) error {
	if c.start == 0 || c.exe == "" {
		return fmt.Errorf("%s (pid %d) exited at once; its log: %s", c.what, c.pid, c.logPath)
	}
	return os.WriteFile(pidFilePath(dir, c.name), fmt.Appendf(nil, "%d %d %s\n", c.pid, c.start, c.exe), 0o644)
}

// leftover is a process a pid file records.
type leftover struct {
	name  string
	pid   int
	start uint64
	exe   string
}

// stopOrder ranks components in the order they are stopped: the clients of the API
// server, then the API server, then etcd.
var stopOrder = []string{"token-server", "manager", "kube-controller-manager", "kube-apiserver", "etcd"}

// readPidFiles returns what the pid files in dir record, in stopOrder.
func readPidFiles(dir string) ([]leftover, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return nil, err
	}
	var out []leftover
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		fields := strings.SplitN(strings.TrimSuffix(string(b), "\n"), " ", 3)
		l := leftover{name: strings.TrimSuffix(filepath.Base(f), ".pid")}
		if len(fields) == 3 {
			l.pid, _ = strconv.Atoi(fields[0])
			l.start, _ = strconv.ParseUint(fields[1], 10, 64)
			l.exe = fields[2]
		}
		if l.pid <= 0 || l.start == 0 || l.exe == "" {
			continue // not written by make dev: nothing to stop
		}
		out = append(out, l)
	}
	rank := func(l leftover) int {
		if i := slices.Index(stopOrder, l.name); i >= 0 {
			return i
		}
		return len(stopOrder)
	}
	slices.SortStableFunc(out, func(a, b leftover) int { return rank(a) - rank(b) })
	return out, nil
}

// stopLeftovers stops what a make dev killed with SIGKILL left running: each process its
// pid files record that still runs the recorded binary since the recorded start time
// (anything else now holding the pid is left alone). It returns what it stopped.
func stopLeftovers(dir string) ([]string, error) {
	ls, err := readPidFiles(dir)
	if err != nil {
		return nil, err
	}
	var stopped []string
	var errs []error
	for _, l := range ls {
		ok, err := stopLeftover(l)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			stopped = append(stopped, fmt.Sprintf("%s (pid %d)", l.name, l.pid))
		}
	}
	return stopped, errors.Join(errs...)
}

// stopLeftover stops one recorded process if it is still the one recorded, and reports
// whether it did. The pidfd is opened before the checks, so that the signals reach the
// process checked even should it exit and its pid be reused meanwhile.
func stopLeftover(l leftover) (bool, error) {
	fd, err := unix.PidfdOpen(l.pid, 0)
	if err != nil {
		return false, nil // gone
	}
	defer unix.Close(fd)
	if _, start, err := procStat(l.pid); err != nil || start != l.start {
		return false, nil // another process since
	}
	if exe, err := procExe(l.pid); err != nil || exe != l.exe {
		return false, nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil {
		return false, nil // exited meanwhile
	}
	if waitPidfd(fd, stopGrace) {
		return true, nil
	}
	_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	if waitPidfd(fd, killWait) {
		return true, nil
	}
	return false, fmt.Errorf("%s (pid %d), left by an earlier make dev, does not stop", l.name, l.pid)
}

// lockDir takes the dev directory's lock, held until this program exits (the kernel
// releases it however it ends), and writes this program's pid into it. When another
// make dev holds it, the error names that one's pid.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another make dev"
			if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				holder += " (pid " + strings.TrimSpace(string(b)) + ")"
			}
			return nil, fmt.Errorf("%s is in use by %s: this checkout has one dev environment; stop that one first, "+
				"or give this one its own directory and port (KEYSMITH_DEV_DIR, KEYSMITH_DEV_TOKEN_SERVER_ADDR)", dir, holder)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
