// Package proc runs the manager and token server binaries as processes of their own for the
// load programs and fault tests (test/scale, test/soak, test/faults): output in a log file, stop, kill, resident memory,
// readiness and Prometheus metrics; and it reads the kernel's TCP socket tables (TCPSockets), for make dev's
// port checks and the failover test's balancer.
package proc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one process a run starts (a manager or a token server), its output in a log
// file of the run's directory.
type Proc struct {
	// Name names the process in errors and its log file.
	Name string
	// LogPath is the file its stdout and stderr go to.
	LogPath string
	// Exited is closed once the process has exited and was reaped.
	Exited chan struct{}
	// Started is when it was started.
	Started time.Time
	// WaitErr is what waiting for the process returned; read it once Exited is closed.
	WaitErr error
	cmd     *exec.Cmd
}

// Start runs bin with args, with env added to this process's environment.
func Start(dir, name, bin string, env []string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, LogPath: filepath.Join(dir, name+".log"), Exited: make(chan struct{})}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.WaitErr = p.cmd.Wait(); close(p.Exited) }()
	return p, nil
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.Exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the process, SIGKILL after 15 s.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.Exited
	}
}

// Kill sends SIGKILL and waits until the process is reaped.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.Exited
}

// RSSKiB reads VmRSS of the process from /proc/<pid>/status.
func (p *Proc) RSSKiB() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS", p.Name)
}

// WaitOK polls url until it answers 200, the process exits, or timeout passes.
func (p *Proc) WaitOK(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.Exited:
			return fmt.Errorf("%s exited; its log: %s", p.Name, p.LogPath)
		default:
		}
		if Status(ctx, url) == http.StatusOK {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not 200 within %s; its log: %s", p.Name, url, timeout, p.LogPath)
}

// Status GETs url and returns the response's status code, 0 when there was none.
func Status(ctx context.Context, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Metric returns the sum of the samples of a Prometheus text-format metric whose labels
// contain label (e.g. `controller="apicredential"`), read from url.
func Metric(ctx context.Context, url, name, label string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	var found bool
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(name)) || !bytes.Contains(line, []byte(label)) {
			continue
		}
		if rest := line[len(name):]; len(rest) == 0 || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := bytes.Fields(line)
		v, err := strconv.ParseFloat(string(f[len(f)-1]), 64)
		if err != nil {
			return 0, err
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("%s{%s} not in %s", name, label, url)
	}
	return sum, sc.Err()
}
