// Command scale measures keysmith at scale in the make dev shape: a real API server
// (envtest), the manager and the token server each in a process of their own, built from
// ./cmd/manager and ./cmd/token-server and run as their service accounts with the
// shipped RBAC. It creates N credentials at once through the API server, with a few
// client goroutines, and prints one line per figure: the time until all are Ready
// (credentials/s), the resident-set growth per credential of both processes (VmRSS,
// before creation → after all Ready), once per --max-concurrent-reconciles value; then
// it restarts the manager over everything issued and counts the writes it makes at rest
// (a watch of the credentials and their Secrets) and its settle time, and restarts the
// token server and times it to ready. Figures are printed, not asserted; it fails only
// when something does not work (a process that exits, a credential never Ready).
// Issue 11; docs/benchmarks.md "Scale". Traffic goes to 127.0.0.1 only.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

const (
	systemNamespace = "keysmith-system"
	managerUser     = "system:serviceaccount:" + systemNamespace + ":keysmith-manager"
	tokenServerUser = "system:serviceaccount:" + systemNamespace + ":keysmith-token-server"
)

type options struct {
	n, clients int
	// limitN is how many of each write measure the API server's own rates (0: none).
	limitN  int
	workers []int
	rest    time.Duration
	keep    bool
	// managerArgs and tokenServerArgs are appended to each process's arguments, e.g.
	// --pprof-bind-address=127.0.0.1:6060 to take heap profiles of the manager.
	managerArgs, tokenServerArgs []string
	// managerBin, when set, is the manager binary run instead of one built from
	// ./cmd/manager (e.g. an older commit's, for a before/after comparison).
	managerBin string
	// profileDir, when set, receives CPU profiles of the API server, profileSeconds each,
	// and of the manager at managerPprof (its --pprof-bind-address) when that is set.
	profileDir     string
	profileSeconds int
	managerPprof   string
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 3000, "credentials created at once, per --workers value")
	flag.IntVar(&o.clients, "clients", 8, "client goroutines creating them")
	flag.IntVar(&o.limitN, "limit-n", -1, "writes of each kind that measure the API server's own rates before the rounds (-1: -n, 0: none)")
	ws := flag.String("workers", "1,4", "comma-separated --max-concurrent-reconciles values, one round each (the last is the one restarted)")
	flag.DurationVar(&o.rest, "rest", 10*time.Second, "how long writes at rest are counted after the restarted manager settled")
	flag.StringVar(&o.managerBin, "manager-bin", "", "a manager binary to run instead of building ./cmd/manager (an older commit's, to compare)")
	flag.StringVar(&o.profileDir, "apiserver-profile", "", "a directory for CPU profiles of the API server: one per limit phase, one per round (each -profile-seconds long, from the phase's start)")
	flag.IntVar(&o.profileSeconds, "profile-seconds", 5, "the length of each CPU profile, in seconds")
	flag.StringVar(&o.managerPprof, "manager-profile", "", "with -apiserver-profile: the manager's --pprof-bind-address (e.g. 127.0.0.1:6060), to profile each round in the manager too")
	flag.BoolVar(&o.keep, "keep", false, "keep the run's directory (the processes' logs)")
	mArgs := flag.String("manager-args", "", "space-separated extra arguments of the manager, e.g. --pprof-bind-address=127.0.0.1:6060")
	tArgs := flag.String("token-server-args", "", "space-separated extra arguments of the token server")
	flag.Parse()
	o.managerArgs, o.tokenServerArgs = strings.Fields(*mArgs), strings.Fields(*tArgs)
	if o.limitN < 0 {
		o.limitN = o.n
	}
	for w := range strings.SplitSeq(*ws, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "scale: --workers: %q is not a positive number\n", w)
			os.Exit(2)
		}
		o.workers = append(o.workers, v)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "keysmith-scale-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("scale: logs in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	built := make(chan error, 1)
	go func() { built <- testenv.Build(ctx, dir, "./cmd/manager", "./cmd/token-server") }()

	env, err := testenv.New()
	if err != nil {
		return err
	}
	if o.profileDir != "" {
		env.ControlPlane.GetAPIServer().Configure().Set("profiling", "true")
	}
	cfg, err := env.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS = -1 // the creators are the load, not client-go's rate limiter
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	if err := testenv.InstallShipped(ctx, c, systemNamespace); err != nil {
		return err
	}
	kubeconfigs := map[string]string{}
	var managerClient client.Client
	for _, user := range []string{managerUser, tokenServerUser} {
		path, u, err := testenv.UserKubeconfig(env, cfg, user, dir)
		if err != nil {
			return err
		}
		kubeconfigs[user] = path
		if user == managerUser {
			mc := u.Config()
			mc.QPS = -1
			if managerClient, err = client.New(mc, client.Options{Scheme: testenv.Scheme()}); err != nil {
				return err
			}
		}
	}
	if err := <-built; err != nil {
		return err
	}
	addrs, err := testenv.FreeAddrs(3)
	if err != nil {
		return err
	}
	probeAddr, metricsAddr, tokenAddr := addrs[0], addrs[1], addrs[2]
	startManager := func(workers int) (*proc.Proc, error) {
		bin := testenv.Binary(dir, "./cmd/manager")
		if o.managerBin != "" {
			bin = o.managerBin
		}
		args := []string{"--max-concurrent-reconciles=" + strconv.Itoa(workers),
			"--enable-webhooks=false",
			"--signing-key-namespace=" + systemNamespace,
			"--health-probe-bind-address=" + probeAddr,
			"--metrics-bind-address=" + metricsAddr}
		if o.managerPprof != "" {
			args = append(args, "--pprof-bind-address="+o.managerPprof)
		}
		m, err := startProc(dir, "manager", bin, kubeconfigs[managerUser], append(args, o.managerArgs...)...)
		if err != nil {
			return nil, err
		}
		return m, m.WaitOK(ctx, "http://"+probeAddr+"/readyz", time.Minute)
	}
	startTokenServer := func() (*proc.Proc, error) {
		ts, err := startProc(dir, "token-server", testenv.Binary(dir, "./cmd/token-server"), kubeconfigs[tokenServerUser],
			append([]string{"--listen=" + tokenAddr, "--issuer=http://" + tokenAddr, "--signing-key-namespace=" + systemNamespace}, o.tokenServerArgs...)...)
		if err != nil {
			return nil, err
		}
		return ts, ts.WaitOK(ctx, "http://"+tokenAddr+"/readyz", 5*time.Minute)
	}

	w := &watcher{ready: map[string]bool{}}
	if err := w.start(ctx, c); err != nil {
		return err
	}
	fmt.Printf("scale: %d credentials per round, %d clients creating; API server, etcd, manager, token server and this process share %d cores\n", o.n, o.clients, runtime.NumCPU())
	prof, err := newProfiler(cfg, o.profileDir, o.profileSeconds, o.managerPprof)
	if err != nil {
		return err
	}
	var lim limits
	if o.limitN > 0 {
		if lim, err = measureLimits(ctx, c, managerClient, o.limitN, o.clients, prof); err != nil {
			return err
		}
		fmt.Printf("scale: limit (the API server alone, %d of each write, %d clients, no manager running): %s\n", o.limitN, o.clients, lim)
	}
	m, err := newMeter(cfg, metricsAddr, tokenAddr)
	if err != nil {
		return err
	}

	var mgr, ts *proc.Proc
	defer func() {
		for _, p := range []*proc.Proc{mgr, ts} {
			if p != nil {
				p.Kill()
			}
		}
	}()
	total := 0
	for i, workers := range o.workers {
		if mgr, err = startManager(workers); err != nil {
			return err
		}
		if ts == nil {
			if ts, err = startTokenServer(); err != nil {
				return err
			}
		}
		ns := fmt.Sprintf("scale-%d-%d", i, workers)
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
		if total > 0 { // the new manager reconciles the earlier rounds' credentials first
			if _, err := settled(ctx, mgr, metricsAddr, total, 5*time.Minute); err != nil {
				return err
			}
		}
		time.Sleep(2 * time.Second) // a baseline after startup's allocations
		before, err := m.read(ctx)
		if err != nil {
			return err
		}
		mgrBefore, err1 := mgr.RSSKiB()
		tsBefore, err2 := ts.RSSKiB()
		if err1 != nil || err2 != nil {
			return fmt.Errorf("reading RSS: %v %v", err1, err2)
		}
		profiled, cpu0 := prof.start(ctx, fmt.Sprintf("round-%d-workers-%d", i, workers)), sampleCPU()
		began := time.Now()
		if err := create(ctx, c, ns, o.n, o.clients); err != nil {
			return err
		}
		created := time.Since(began)
		if err := w.waitReady(ctx, mgr, total+o.n, 10*time.Minute); err != nil {
			return err
		}
		took := time.Since(began)
		cpu1 := sampleCPU()
		if err := profiled(); err != nil {
			return err
		}
		total += o.n
		time.Sleep(2 * time.Second) // let the token server's watch catch up and the heaps settle
		mgrAfter, err1 := mgr.RSSKiB()
		tsAfter, err2 := ts.RSSKiB()
		if err1 != nil || err2 != nil {
			return fmt.Errorf("reading RSS: %v %v", err1, err2)
		}
		if err := idle(ctx, mgr, metricsAddr, time.Minute); err != nil { // every wake-up the issues caused is handled
			return err
		}
		after, err := m.read(ctx)
		if err != nil {
			return err
		}
		tag := fmt.Sprintf("scale: workers=%d n=%d", workers, o.n)
		fmt.Printf("%s created in %.1fs (%.0f creates/s)\n", tag, created.Seconds(), float64(o.n)/created.Seconds())
		rate := float64(o.n) / took.Seconds()
		fmt.Printf("%s all Ready %.1fs after the first create: %.0f credentials/s\n", tag, took.Seconds(), rate)
		if o.limitN > 0 {
			fmt.Printf("%s issue rate %.0f/s = %.0f %% of the limit of the unavoidable writes (%.0f/s)\n", tag, rate, 100*rate/lim.rate(), lim.rate())
		}
		before.report(tag, after, o.n)
		fmt.Printf("%s %s\n", tag, cpu0.per(cpu1, o.n, "credential, creation to all Ready"))
		if cpu := cpu1.total(cpu0) / time.Duration(o.n); lim.cpu > 0 {
			fmt.Printf("%s by CPU: %.2f ms per credential = %.0f %% of the four writes' %.2f ms (%.0f credentials/s on %d cores)\n", tag,
				float64(cpu)/float64(time.Millisecond), 100*float64(cpu)/float64(lim.cpu), float64(lim.cpu)/float64(time.Millisecond), lim.cpuRate(), runtime.NumCPU())
		}
		fmt.Printf("%s manager RSS %.1f → %.1f MiB: %.2f KiB per credential (%d cached before)\n", tag,
			float64(mgrBefore)/1024, float64(mgrAfter)/1024, float64(mgrAfter-mgrBefore)/float64(o.n), total-o.n)
		fmt.Printf("%s token server RSS %.1f → %.1f MiB: %.2f KiB per credential\n", tag,
			float64(tsBefore)/1024, float64(tsAfter)/1024, float64(tsAfter-tsBefore)/float64(o.n))
		if i < len(o.workers)-1 {
			mgr.Stop()
			mgr = nil
		}
	}

	// The manager restarted over everything issued: it must settle without a write.
	workers := o.workers[len(o.workers)-1]
	mgr.Kill()
	mgr = nil
	writes := w.writes.Load()
	restarted := time.Now()
	if mgr, err = startManager(workers); err != nil {
		return err
	}
	settle, err := settled(ctx, mgr, metricsAddr, total, 5*time.Minute)
	if err != nil {
		return err
	}
	time.Sleep(o.rest)
	fmt.Printf("scale: manager restart over %d credentials (workers=%d): settled %.1fs after start (every credential reconciled, queue empty)\n",
		total, workers, settle.Seconds())
	fmt.Printf("scale: manager restart: %d writes at rest (credential or credential Secret changes, from the restart until %.0fs after settling; %.1fs in all)\n",
		w.writes.Load()-writes, o.rest.Seconds(), time.Since(restarted).Seconds())

	ts.Kill()
	ts = nil
	tsStart := time.Now()
	if ts, err = startTokenServer(); err != nil {
		return err
	}
	fmt.Printf("scale: token server restart over %d credentials: ready (synced) %.2fs after start\n", total, time.Since(tsStart).Seconds())
	if err := w.err(); err != nil {
		return err
	}
	return nil
}

// settled waits until the manager has reconciled every credential once and its queue is
// empty, and returns how long after its start that was.
func settled(ctx context.Context, m *proc.Proc, metricsAddr string, total int, timeout time.Duration) (time.Duration, error) {
	url := "http://" + metricsAddr + "/metrics"
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-m.Exited:
			return 0, fmt.Errorf("manager exited; its log: %s", m.LogPath)
		default:
		}
		done, err1 := proc.Metric(ctx, url, "controller_runtime_reconcile_total", `controller="apicredential"`)
		depth, err2 := proc.Metric(ctx, url, "workqueue_depth", `name="apicredential"`)
		if err1 == nil && err2 == nil && done >= float64(total) && depth == 0 {
			return time.Since(m.Started), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("manager not settled within %s", timeout)
}

// idle waits until the manager's queue is empty and no worker is busy.
func idle(ctx context.Context, m *proc.Proc, metricsAddr string, timeout time.Duration) error {
	url := "http://" + metricsAddr + "/metrics"
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		depth, err1 := proc.Metric(ctx, url, "workqueue_depth", `name="apicredential"`)
		busy, err2 := proc.Metric(ctx, url, "controller_runtime_active_workers", `controller="apicredential"`)
		if err1 == nil && err2 == nil && depth == 0 && busy == 0 {
			return nil
		}
		select {
		case <-m.Exited:
			return fmt.Errorf("manager exited; its log: %s", m.LogPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("manager not idle within %s", timeout)
}

// create creates n credentials in ns with clients concurrent goroutines.
func create(ctx context.Context, c client.Client, ns string, n, clients int) error {
	names := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range clients {
		wg.Go(func() {
			for i := range names {
				cred := &iamv1alpha1.APICredential{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("cred-%05d", i)},
					Spec: iamv1alpha1.APICredentialSpec{
						DisplayName: fmt.Sprintf("scale %d", i),
						APIs:        []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
					},
				}
				if err := c.Create(ctx, cred); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		names <- i
	}
	close(names)
	wg.Wait()
	return first
}

// watcher follows the credentials and their Secrets in every namespace: which are Ready
// (Issued), and how many changes it saw (writes), each watch restarted from where it ended.
type watcher struct {
	mu     sync.Mutex
	ready  map[string]bool
	failed error
	writes atomic.Int64
}

func (w *watcher) start(ctx context.Context, c client.WithWatch) error {
	creds, err := c.Watch(ctx, &iamv1alpha1.APICredentialList{})
	if err != nil {
		return err
	}
	secrets, err := c.Watch(ctx, &corev1.SecretList{}, client.HasLabels{iamv1alpha1.CredentialLabel})
	if err != nil {
		return err
	}
	go w.follow(ctx, c, creds, &iamv1alpha1.APICredentialList{}, nil)
	go w.follow(ctx, c, secrets, &corev1.SecretList{}, client.HasLabels{iamv1alpha1.CredentialLabel})
	return nil
}

func (w *watcher) follow(ctx context.Context, c client.WithWatch, wi watch.Interface, list client.ObjectList, opt client.ListOption) {
	rv := ""
	for {
		for ev := range wi.ResultChan() {
			obj, ok := ev.Object.(client.Object)
			if !ok {
				continue // a watch error: restarted below from rv
			}
			rv = obj.GetResourceVersion()
			if ev.Type == watch.Bookmark {
				continue
			}
			w.writes.Add(1)
			if cred, ok := obj.(*iamv1alpha1.APICredential); ok {
				c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
				ok := ev.Type != watch.Deleted && c != nil && c.Status == metav1.ConditionTrue && c.Reason == iamv1alpha1.ReasonIssued
				w.mu.Lock()
				w.ready[cred.Namespace+"/"+cred.Name] = ok
				w.mu.Unlock()
			}
		}
		if ctx.Err() != nil {
			return
		}
		opts := []client.ListOption{&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}}}
		if opt != nil {
			opts = append(opts, opt)
		}
		var err error
		if wi, err = c.Watch(ctx, list, opts...); err != nil {
			w.mu.Lock()
			w.failed = fmt.Errorf("restarting a watch: %w", err)
			w.mu.Unlock()
			return
		}
	}
}

func (w *watcher) readyCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, ok := range w.ready {
		if ok {
			n++
		}
	}
	return n
}

func (w *watcher) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

// waitReady waits until n credentials are Ready, the manager exits, or timeout passes.
func (w *watcher) waitReady(ctx context.Context, m *proc.Proc, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := w.err(); err != nil {
			return err
		}
		select {
		case <-m.Exited:
			return fmt.Errorf("manager exited; its log: %s", m.LogPath)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if w.readyCount() >= n {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%d of %d credentials Ready after %s", w.readyCount(), n, timeout)
}

// startProc runs bin with args as the user of kubeconfig, in the operator's namespace.
func startProc(dir, name, bin, kubeconfig string, args ...string) (*proc.Proc, error) {
	return proc.Start(dir, name, bin, []string{"KUBECONFIG=" + kubeconfig, "POD_NAMESPACE=" + systemNamespace}, args...)
}
