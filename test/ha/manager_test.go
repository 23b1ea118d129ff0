package ha

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// Leader election timing of the two managers. The defaults are short, so that the test
// measures a takeover in seconds, with the margins client-go requires (lease > renew
// deadline > 1.2 × retry period): a renew deadline of 2s still leaves the leader four
// attempts, each with a 1s timeout, on two shared cores before it would give up leading.
// The manager's own defaults (15s, 10s, 2s) are measured with
// `go test ./test/ha -count=1 -v -args -lease-duration=15s -renew-deadline=10s -retry-period=2s`.
var (
	leaseDuration = flag.Duration("lease-duration", 3*time.Second, "the managers' --leader-elect-lease-duration")
	renewDeadline = flag.Duration("renew-deadline", 2*time.Second, "the managers' --leader-elect-renew-deadline")
	retryPeriod   = flag.Duration("retry-period", 500*time.Millisecond, "the managers' --leader-elect-retry-period")
)

// acquiredLine is what client-go's leader election logs when a candidate takes the lease.
const acquiredLine = "successfully acquired lease"

// The messages the manager logs (JSON, zap's production encoder) when it issues a
// credential and when it adopts a Secret it finds already written.
const (
	issuedMsg  = `"msg":"issued credential"`
	adoptedMsg = `"msg":"adopted credential Secret"`
)

// managerProc is one manager process, run from the binary the test built.
type managerProc struct {
	name    string
	logPath string
	// webhookAddr, probeAddr and metricsAddr are the host:port it listens on.
	webhookAddr, probeAddr, metricsAddr string
	cmd                                 *exec.Cmd
	// exited is closed once the process has exited and been reaped.
	exited  chan struct{}
	waitErr error
}

// startManager runs the manager binary with leader election, its webhook server on a
// free loopback port serving the certificate in certDir, and its output in a log file of
// dir, listening on addrs (webhook, probes, metrics). The process is killed when the test
// ends, and its log printed if the test failed.
func startManager(t *testing.T, bin, dir, name, kubeconfig, certDir string, addrs []string) (*managerProc, error) {
	m := &managerProc{name: name, logPath: filepath.Join(dir, name+".log"), exited: make(chan struct{}),
		webhookAddr: addrs[0], probeAddr: addrs[1], metricsAddr: addrs[2]}
	host, port, err := net.SplitHostPort(m.webhookAddr)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(m.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	m.cmd = exec.Command(bin,
		"--kubeconfig="+kubeconfig,
		"--leader-elect",
		"--leader-elect-lease-duration="+leaseDuration.String(),
		"--leader-elect-renew-deadline="+renewDeadline.String(),
		"--leader-elect-retry-period="+retryPeriod.String(),
		"--signing-key-namespace="+systemNamespace,
		"--metrics-bind-address="+m.metricsAddr,
		"--health-probe-bind-address="+m.probeAddr,
		"--webhook-host="+host,
		"--webhook-port="+port,
		"--webhook-cert-dir="+certDir,
	)
	m.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+systemNamespace)
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		_ = m.cmd.Process.Kill()
		<-m.exited
		if t.Failed() {
			t.Logf("--- %s (%s), pid %d, %v:\n%s", name, m.logPath, m.cmd.Process.Pid, m.waitErr, tail(m.log(), 150))
		}
	})
	return m, nil
}

// kill sends SIGKILL and waits until the process is reaped: its sockets are closed then.
func (m *managerProc) kill() {
	_ = m.cmd.Process.Kill()
	<-m.exited
}

// mustRun stops an Eventually at once, failing it, when the process has exited.
func (m *managerProc) mustRun() {
	if !m.running() {
		StopTrying(fmt.Sprintf("%s exited: %v", m.name, m.waitErr)).Now()
	}
}

// running says whether the process has not exited.
func (m *managerProc) running() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// ready says whether the manager's /readyz answers 200 (it includes the webhook server).
func (m *managerProc) ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.probeAddr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// log returns the process's output so far.
func (m *managerProc) log() []byte {
	data, _ := os.ReadFile(m.logPath)
	return data
}

// acquired says whether the process's log says it took the leader lease.
func (m *managerProc) acquired() bool {
	return bytes.Contains(bytes.ToLower(m.log()), []byte(acquiredLine))
}

// logged counts the lines of the process's log that hold s.
func (m *managerProc) logged(s string) int {
	return bytes.Count(m.log(), []byte(s))
}

// tail returns the last n lines of data.
func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"… " + strconv.Itoa(len(lines)-n) + " lines before"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
