package faults

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

var (
	etcdStop      = flag.Duration("etcd-stop", 30*time.Second, "how long TestEtcdStopped keeps etcd stopped")
	apiServerDown = flag.Duration("apiserver-down", 5*time.Second, "how long TestAPIServerRestarted keeps the API server down before it starts it again")
)

// fault is what an outage test does to the control plane: inject, hold for a while, heal.
type fault struct {
	name string
	hold time.Duration
	// inject and heal are given the control plane; heal returns once the fault is over.
	inject, heal func(t *testing.T, env *envtest.Environment) error
}

const tokenServerUser = "system:serviceaccount:" + systemNamespace + ":keysmith-token-server"

// TestEtcdStopped stops etcd (SIGSTOP: the API server's requests to it hang, as to an
// unreachable member) for 30 s under token load: the manager and the token server stay
// running and ready, without a panic, and the token endpoint keeps issuing from the token
// server's cache; after etcd is back, a new credential is issued and served.
func TestEtcdStopped(t *testing.T) {
	pid := 0
	outage(t, fault{name: "etcd stopped", hold: *etcdStop,
		inject: func(t *testing.T, env *envtest.Environment) error {
			var err error
			if pid, err = findProcess("etcd", env.ControlPlane.Etcd.DataDir); err != nil {
				return err
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				return err
			}
			return awaitStopped(pid, 5*time.Second)
		},
		heal: func(*testing.T, *envtest.Environment) error { return syscall.Kill(pid, syscall.SIGCONT) },
	})
}

// TestAPIServerRestarted kills the API server (SIGKILL) under token load and starts it
// again, with the same arguments, 5 s later: as TestEtcdStopped, the manager and the token
// server stay running and ready and the token endpoint keeps issuing; afterwards a new
// credential is issued and served.
func TestAPIServerRestarted(t *testing.T) {
	var argv, environ []string
	outage(t, fault{name: "API server down", hold: *apiServerDown,
		inject: func(t *testing.T, env *envtest.Environment) error {
			pid, err := findProcess("kube-apiserver", env.ControlPlane.APIServer.CertDir)
			if err != nil {
				return err
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil {
				return err
			}
			envData, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err != nil {
				return err
			}
			argv = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
			environ = strings.Split(strings.TrimRight(string(envData), "\x00"), "\x00")
			return syscall.Kill(pid, syscall.SIGKILL)
		},
		heal: func(t *testing.T, env *envtest.Environment) error {
			// envtest's handle on the killed process sees it exited; the new one is this
			// test's to stop, before envtest removes the directories it uses.
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = environ
			logFile, err := os.Create(filepath.Join(t.TempDir(), "kube-apiserver.log"))
			if err != nil {
				return err
			}
			cmd.Stdout, cmd.Stderr = logFile, logFile
			if err := cmd.Start(); err != nil {
				return err
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill() // its graceful shutdown waits out delays a test need not
				<-exited
				logFile.Close()
			})
			return nil
		},
	})
}

func outage(t *testing.T, f fault) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g := NewWithT(t)
	dir := t.TempDir()

	build := make(chan error, 1)
	go func() { build <- testenv.Build(ctx, dir, "./cmd/manager", "./cmd/token-server") }()
	env, cfg := testenv.StartT(t)
	cfg.QPS = -1
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testenv.InstallShipped(ctx, c, systemNamespace, tenantNamespace)).To(Succeed())
	kubeconfigs := map[string]string{}
	for _, user := range []string{managerUser, tokenServerUser} {
		path, _, err := testenv.UserKubeconfig(env, cfg, user, dir)
		g.Expect(err).NotTo(HaveOccurred())
		kubeconfigs[user] = path
	}
	g.Expect(<-build).To(Succeed())

	addrs, err := testenv.FreeAddrs(3)
	g.Expect(err).NotTo(HaveOccurred())
	mgr, err := startManager(t, testenv.Binary(dir, "./cmd/manager"), dir, 0, kubeconfigs[managerUser], addrs[:2])
	g.Expect(err).NotTo(HaveOccurred())
	tokenAddr := addrs[2]
	ts, err := startProc(t, dir, "token-server", 0, testenv.Binary(dir, "./cmd/token-server"),
		"--kubeconfig="+kubeconfigs[tokenServerUser], "--listen="+tokenAddr, "--issuer=http://"+tokenAddr,
		"--signing-key-namespace="+systemNamespace, "--usage-interval=1s")
	g.Expect(err).NotTo(HaveOccurred())
	probes := map[string]string{"manager": "http://" + addrs[0] + "/readyz", "token server": "http://" + tokenAddr + "/readyz"}
	g.Eventually(func() bool {
		return mgr.Running() && ts.Running() && status(ctx, probes["manager"]) == 200 && status(ctx, probes["token server"]) == 200
	}).WithTimeout(60*time.Second).WithPolling(100*time.Millisecond).Should(BeTrue(), "both processes ready")

	const n = 20
	for i := range n {
		g.Expect(c.Create(ctx, newCredential(fmt.Sprintf("etcd-%02d", i)))).To(Succeed())
	}
	var creds []clientCreds
	g.Eventually(func(g Gomega) {
		creds = creds[:0]
		list := &iamv1alpha1.APICredentialList{}
		g.Expect(c.List(ctx, list, client.InNamespace(tenantNamespace))).To(Succeed())
		for i := range list.Items {
			cred := &list.Items[i]
			g.Expect(isReady(cred)).To(BeTrue(), cred.Name)
			secret := &corev1.Secret{}
			g.Expect(c.Get(ctx, client.ObjectKey{Namespace: tenantNamespace, Name: cred.Status.SecretRef.Name}, secret)).To(Succeed())
			keys := cred.Spec.SecretKeyNames()
			creds = append(creds, clientCreds{string(secret.Data[keys.ClientID]), string(secret.Data[keys.ClientSecret])})
		}
		g.Expect(creds).To(HaveLen(n))
	}).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "the credentials issued")
	// Every one served before etcd stops.
	g.Eventually(func() int { return creds[n-1].token(ctx, tokenAddr) }).WithTimeout(20 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(200))

	// Load: token requests round-robin, and readiness probes of both processes, counted
	// by phase (0 before, 1 during the fault until the API server answers, 2 after).
	var phase atomic.Int32
	type counts struct{ ok, failed map[int]int }
	var mu sync.Mutex
	tokens := [3]counts{}
	notReady := [3]map[string]int{}
	for i := range tokens {
		tokens[i] = counts{map[int]int{}, map[int]int{}}
		notReady[i] = map[string]int{}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	for w := range 2 {
		load.Go(func() {
			for i := w; loadCtx.Err() == nil; i++ {
				code := creds[i%n].token(loadCtx, tokenAddr)
				p := phase.Load()
				mu.Lock()
				if code == 200 {
					tokens[p].ok[code]++
				} else if loadCtx.Err() == nil {
					tokens[p].failed[code]++
				}
				mu.Unlock()
			}
		})
	}
	load.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for loadCtx.Err() == nil {
			<-tick.C
			for name, u := range probes {
				if code := status(loadCtx, u); code != 200 && loadCtx.Err() == nil {
					p := phase.Load()
					mu.Lock()
					notReady[p][name]++
					mu.Unlock()
				}
			}
		}
	})

	g.Eventually(func() int { mu.Lock(); defer mu.Unlock(); return tokens[0].ok[200] }).WithTimeout(10 * time.Second).Should(BeNumerically(">", 10))
	t.Logf("%6.2fs %s for %s", time.Since(started).Seconds(), f.name, f.hold)
	g.Expect(f.inject(t, env)).To(Succeed())
	phase.Store(1)
	stopped := time.Now()
	// The fault is real: a read through the API server fails.
	func() {
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		defer rcancel()
		err := c.Get(rctx, client.ObjectKey{Namespace: tenantNamespace, Name: "etcd-00"}, &iamv1alpha1.APICredential{})
		g.Expect(err).To(HaveOccurred(), "a read through the API server fails: %s", f.name)
	}()
	select {
	case <-time.After(time.Until(stopped.Add(f.hold))):
	case <-mgr.Exited:
	case <-ts.Exited:
	}
	g.Expect(f.heal(t, env)).To(Succeed())
	// Phase 1 lasts until the API server answers again.
	g.Eventually(func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: tenantNamespace, Name: "etcd-00"}, &iamv1alpha1.APICredential{})
	}).WithTimeout(60*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "the API server answers again")
	phase.Store(2)
	t.Logf("%6.2fs %s: over after %.1fs", time.Since(started).Seconds(), f.name, time.Since(stopped).Seconds())
	g.Expect(mgr.Running()).To(BeTrue(), "the manager runs through the fault: %v", mgr.WaitErr)
	g.Expect(ts.Running()).To(BeTrue(), "the token server runs through the fault: %v", ts.WaitErr)

	// After: a new credential is issued and served.
	g.Eventually(func() error { return c.Create(ctx, newCredential("etcd-after")) }).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	var after clientCreds
	g.Eventually(func(g Gomega) {
		cred := &iamv1alpha1.APICredential{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: tenantNamespace, Name: "etcd-after"}, cred)).To(Succeed())
		g.Expect(isReady(cred)).To(BeTrue())
		secret := &corev1.Secret{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: tenantNamespace, Name: cred.Status.SecretRef.Name}, secret)).To(Succeed())
		keys := cred.Spec.SecretKeyNames()
		after = clientCreds{string(secret.Data[keys.ClientID]), string(secret.Data[keys.ClientSecret])}
	}).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "a credential created after etcd is back is issued")
	g.Eventually(func() int { return after.token(ctx, tokenAddr) }).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Equal(200),
		"and served by the token server")
	stopLoad()
	load.Wait()

	for _, p := range []*managerProc{mgr, ts} {
		g.Expect(p.Running()).To(BeTrue())
		g.Expect(strings.Contains(string(p.log()), "panic")).To(BeFalse(), "%s logged no panic", p.LogPath)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, name := range []string{"before", "during", "after"} {
		t.Logf("%s: %-6s tokens ok %d, failed %v; not ready probes %v", f.name, name, tokens[i].ok[200], tokens[i].failed, notReady[i])
	}
	t.Logf("faults: %s for %s: tokens during=%d failed during=%d manager not ready=%d token server not ready=%d elapsed=%.1fs",
		f.name, f.hold, tokens[1].ok[200], sum(tokens[1].failed), notReady[1]["manager"], notReady[1]["token server"], time.Since(started).Seconds())
	g.Expect(tokens[1].ok[200]).To(BeNumerically(">", 0), "the token endpoint issues during the fault")
	g.Expect(sum(tokens[1].failed)).To(BeZero(), "every token request of a cached credential succeeds during the fault")
	g.Expect(notReady[1]).To(BeEmpty(), "both processes stay ready during the fault")
}

type clientCreds struct{ id, secret string }

// token asks the token endpoint for a token, waiting at most 5 s, and returns the status
// code (0 when the request failed: a hang counts as a failure). Nothing of the answer is
// kept.
func (cc clientCreds) token(ctx context.Context, addr string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/oauth2/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(cc.id, cc.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// status GETs url with a 2 s timeout and returns the status code, 0 on error.
func status(ctx context.Context, u string) int {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return proc.Status(ctx, u)
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// findProcess returns the pid of the process of the binary called name whose command line
// holds dir (its data or certificate directory).
// awaitStopped returns once every thread of the process pid is in the stopped state
// ('T' in /proc/<pid>/task/<tid>/stat): kill(2) only queues SIGSTOP, each thread stops on
// its own, and on a loaded machine etcd can still answer a request before all have (the
// make test of e48ee3c read a credential through the API server right after the signal).
func awaitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !allThreadsStopped(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped %s after SIGSTOP", pid, timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// allThreadsStopped reports whether every thread of pid is stopped; false if unreadable.
func allThreadsStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			return false
		}
		st, err := proc.ReadTaskStat(pid, tid)
		if err != nil || (st.State != 'T' && st.State != 't') {
			return false
		}
	}
	return true
}

func findProcess(name, dir string) (int, error) {
	if dir == "" {
		return 0, fmt.Errorf("envtest's %s has no directory", name)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if filepath.Base(args[0]) == name && strings.Contains(string(data), dir) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process of %s", name, dir)
}
