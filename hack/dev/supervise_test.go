package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestListensOn: a listener is told to be this process's, and no other's.
func TestListensOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if !listensOn(os.Getpid(), port) {
		t.Fatal("this process's listener is not found")
	}
	if listensOn(os.Getppid(), port) {
		t.Fatal("the parent is said to hold this process's listener")
	}
	exe, _ := os.Executable()
	if h := portHolder(port); h != fmt.Sprintf("pid %d (%s)", os.Getpid(), realPath(exe)) {
		t.Fatalf("portHolder = %q", h)
	}
	ln.Close()
	if listensOn(os.Getpid(), port) || portHolder(port) != "" {
		t.Fatal("a closed listener is still found")
	}
}

// TestStopLeftoverChecksTheProcess: a pid file's process is stopped only while it runs
// the recorded binary since the recorded start time; anything else holding the pid, as
// after a pid is reused, is left alone.
func TestStopLeftoverChecksTheProcess(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sleep, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	pid := cmd.Process.Pid
	_, start, err := procStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := procExe(pid)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	for _, l := range []leftover{
		{name: "etcd", pid: pid, start: start, exe: "/usr/local/bin/etcd"}, // another binary
		{name: "etcd", pid: pid, start: start + 1, exe: exe},               // started at another time
	} {
		writeLeftover(t, dir, l)
		stopped, err := stopLeftovers(dir)
		if err != nil || len(stopped) != 0 {
			t.Fatalf("stopLeftovers(%+v) = %v, %v; want nothing stopped", l, stopped, err)
		}
		select {
		case <-exited:
			t.Fatalf("the process was stopped although the pid file records %+v", l)
		case <-time.After(100 * time.Millisecond):
		}
	}

	writeLeftover(t, dir, leftover{name: "etcd", pid: pid, start: start, exe: exe})
	stopped, err := stopLeftovers(dir)
	if err != nil || len(stopped) != 1 || stopped[0] != "etcd (pid "+strconv.Itoa(pid)+")" {
		t.Fatalf("stopLeftovers = %v, %v; want the process stopped", stopped, err)
	}
	<-exited
}

func writeLeftover(t *testing.T, dir string, l leftover) {
	t.Helper()
	c := &component{name: l.name, what: l.name, pid: l.pid, start: l.start, exe: l.exe}
	if err := writePidFile(dir, c); err != nil {
		t.Fatal(err)
	}
}

// TestLockDir: one holder at a time, the second told the first's pid; the lock goes with
// its holder.
func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDir(dir)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in use by another make dev (pid %d)", os.Getpid())) {
		t.Fatalf("second lockDir: %v; want it refused naming pid %d", err, os.Getpid())
	}
	first.Close()
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lockDir after the holder closed it: %v", err)
	}
	again.Close()
}

// TestSupervisor: the first component to exit on its own is reported, naming it and its
// log, whether make dev started it or only adopted it (as envtest's etcd); stopAll then
// stops the others, returns although that one is gone already (make dev used to hang
// there), and removes the pid files.
func TestSupervisor(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	died := make(chan error, 4)
	s := &supervisor{dir: dir, died: func(err error) { died <- err }}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = s.stopAll(nil)
		}
	})
	ts, err := s.start("token-server", "the token server", sleep, "300")
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := s.start("manager", "the manager", sleep, "300")
	if err != nil {
		t.Fatal(err)
	}
	// A process this program did not start through the supervisor, as envtest's etcd.
	etcdCmd := exec.Command(sleep, "300")
	if err := etcdCmd.Start(); err != nil {
		t.Fatal(err)
	}
	etcdExited := make(chan struct{})
	go func() { _ = etcdCmd.Wait(); close(etcdExited) }()
	t.Cleanup(func() { _ = etcdCmd.Process.Kill(); <-etcdExited })
	if err := s.adopt("etcd", "etcd", etcdCmd.Process.Pid, dir+"/etcd.log"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"token-server", "manager", "etcd"} {
		if _, err := os.Stat(pidFilePath(dir, name)); err != nil {
			t.Fatalf("no pid file for %s: %v", name, err)
		}
	}

	if err := ts.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("the token server (pid %d) exited (signal: killed); its log: %s/token-server.log", ts.pid, dir)
	if err := next(t, died); err.Error() != want {
		t.Fatalf("died(%q); want %q", err, want)
	}
	if err := etcdCmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	want = fmt.Sprintf("etcd (pid %d) exited; its log: %s/etcd.log", etcdCmd.Process.Pid, dir)
	if err := next(t, died); err.Error() != want {
		t.Fatalf("died(%q); want %q", err, want)
	}

	stopped = true
	if err := s.stopAll(nil); err != nil {
		t.Fatal(err)
	}
	if !waitDone(mgr.done, 0) {
		t.Fatal("stopAll returned with the manager running")
	}
	if len(died) != 0 {
		t.Fatalf("a component stopped by stopAll was reported as died: %v", <-died)
	}
	if pids, _ := readPidFiles(dir); len(pids) != 0 {
		t.Fatalf("pid files left: %+v", pids)
	}
}

// next returns the next error reported, failing the test should none come within 30 s.
func next(t *testing.T, died <-chan error) error {
	t.Helper()
	select {
	case err := <-died:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("no component was reported as died")
		return nil
	}
}
