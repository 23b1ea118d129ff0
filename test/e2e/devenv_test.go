package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/keysmith-dev/keysmith/internal/testenv"
	procstat "github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

// devBinary is hack/dev built once for the suite: what `make dev` runs.
var devBinary string

var _ = BeforeSuite(func(ctx SpecContext) {
	devBinary = filepath.Join(GinkgoT().TempDir(), "keysmith-dev")
	build := exec.CommandContext(ctx, "go", "build", "-o", devBinary, "./hack/dev")
	build.Dir = testenv.RepoRoot()
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
})

const readyPrefix = "keysmith dev environment ready: kubeconfig="

// components are the processes of one environment, by binary name.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "manager", "token-server"}

// devInstance is one run of the make dev binary, driven from outside as a user would:
// its environment, its signals, its output.
type devInstance struct {
	dir  string // the dev directory, relative to the repository root
	addr string // the token server's address
	cmd  *exec.Cmd
	// stdout holds what it printed up to its ready line, stderr all it printed there.
	stdout, stderr syncBuffer
	ready          chan string
	done           chan struct{}
	err            error // how it exited; read after done
}

// freeAddr returns a loopback address with a port nothing listens on now, so that tests
// run beside a developer's make dev (18080) and beside each other.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer ln.Close()
	return ln.Addr().String()
}

// startDev runs the make dev binary on a dev directory and a token-server address of the
// test's own.
func startDev(dir, addr string) *devInstance {
	assets, err := testenv.AssetsDir()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	d := &devInstance{dir: dir, addr: addr, ready: make(chan string, 1), done: make(chan struct{})}
	d.cmd = exec.Command(devBinary)
	d.cmd.Dir = testenv.RepoRoot()
	d.cmd.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+assets, "KEYSMITH_DEV_DIR="+dir, "KEYSMITH_DEV_TOKEN_SERVER_ADDR="+addr)
	d.cmd.Stderr = io.MultiWriter(&d.stderr, GinkgoWriter)
	stdout, err := d.cmd.StdoutPipe()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	ExpectWithOffset(1, d.cmd.Start()).To(Succeed())
	go func() {
		defer GinkgoRecover()
		sc := bufio.NewScanner(stdout)
		ready := false
		for sc.Scan() {
			GinkgoWriter.Println(sc.Text())
			if !ready {
				d.stdout.Write([]byte(sc.Text() + "\n"))
			}
			if !ready && strings.HasPrefix(sc.Text(), readyPrefix) {
				ready = true
				d.ready <- sc.Text()
			}
		}
		d.err = d.cmd.Wait()
		GinkgoWriter.Printf("make dev (%s) exited: %v\n", dir, d.err)
		close(d.done)
	}()
	return d
}

// waitReady waits for the ready line and returns it; make dev must not exit first.
func (d *devInstance) waitReady() string {
	start := time.Now()
	select {
	case l := <-d.ready:
		GinkgoWriter.Printf("ready line after %s\n", time.Since(start))
		return l
	case <-d.done:
		Fail(fmt.Sprintf("make dev exited before its ready line (%v): %s", d.err, d.stderr.String()), 1)
	case <-time.After(4 * time.Minute):
		Fail("no ready line within 4 minutes: "+d.stderr.String(), 1)
	}
	return ""
}

// exited reports whether make dev has exited.
func (d *devInstance) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// exitCode waits up to timeout for make dev to exit and returns its exit code.
func (d *devInstance) exitCode(timeout time.Duration) int {
	EventuallyWithOffset(1, d.done).WithTimeout(timeout).Should(BeClosed(), "make dev has not exited: %s", d.stderr.String())
	if d.err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	ExpectWithOffset(1, d.err).To(BeAssignableToTypeOf(exitErr))
	return d.err.(*exec.ExitError).ExitCode()
}

// kill ends make dev with SIGKILL if it still runs.
func (d *devInstance) kill() {
	if d != nil && !d.exited() {
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// cleanUp kills make dev if it still runs and every component process of its dev
// directory (the safety net of a failed spec, so that it leaks nothing into the next), and
// removes the directory. Only the components' binaries are killed: any other process
// naming the directory, a shell or a pager reading a log, is not the environment's.
func (d *devInstance) cleanUp() {
	if d == nil {
		return
	}
	d.kill()
	for pid, p := range devProcesses(d.dir) {
		if slices.Contains(components, p.name) { // not, say, a tail -f of one of its logs
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// The logs a failed make dev keeps, once the spec has passed or failed with them.
	_ = os.RemoveAll(d.absDir())
}

// absDir is the dev directory's absolute path, which every component names on its
// command line: etcd its data, kube-apiserver its certificates, the others their
// kubeconfigs or binaries.
func (d *devInstance) absDir() string { return filepath.Join(testenv.RepoRoot(), d.dir) }

// proc is a process seen in /proc: its pid and start time tell it from a later process
// given the same pid.
type proc struct {
	pid   int
	start string
	name  string // its binary's base name
}

// devProcesses returns the processes whose command line names the dev directory (an
// absolute path: another checkout's run of the same test is none of them), by pid.
func devProcesses(dir string) map[int]proc {
	abs := filepath.Join(testenv.RepoRoot(), dir) + "/"
	entries, err := os.ReadDir("/proc")
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	out := map[int]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(abs)) {
			continue
		}
		p, ok := procOf(pid)
		if ok {
			out[pid] = p
		}
	}
	return out
}

// procOf reads a process's start time and binary name, if it runs (a zombie does not).
func procOf(pid int) (proc, bool) {
	st, err := procstat.ReadStat(pid)
	if err != nil || st.State == 'Z' {
		return proc{}, false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return proc{}, false
	}
	return proc{pid: pid, start: strconv.FormatUint(st.StartTime, 10), name: filepath.Base(strings.TrimSuffix(exe, " (deleted)"))}, true
}

// alive reports whether the process p still runs (not a later one given its pid).
func alive(p proc) bool {
	now, ok := procOf(p.pid)
	return ok && now.start == p.start
}

// running returns the environment's processes and expects exactly one of each component:
// the pattern that finds leftovers finds all of them.
func (d *devInstance) running() map[string]proc {
	byName := map[string]proc{}
	for _, p := range devProcesses(d.dir) {
		_, dup := byName[p.name]
		ExpectWithOffset(1, dup).To(BeFalse(), "two %s processes", p.name)
		byName[p.name] = p
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	ExpectWithOffset(1, names).To(ConsistOf(components), "the environment's processes")
	return byName
}

// expectNothingLeft expects none of the processes, nor any other process of the dev
// directory, to run.
func expectNothingLeft(dir string, procs map[string]proc) {
	for name, p := range procs {
		ExpectWithOffset(1, alive(p)).To(BeFalse(), "%s (pid %d) still runs", name, p.pid)
	}
	ExpectWithOffset(1, devProcesses(dir)).To(BeEmpty(), "no process of %s is left", dir)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in two goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
