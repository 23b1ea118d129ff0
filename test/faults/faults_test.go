// Package faults injects faults into keysmith's processes, run as real processes built from
// ./cmd/manager and ./cmd/token-server against a real API server (envtest), each as its
// service account, with the shipped RBAC and the status policy:
//
//   - TestKill9: while credentials are issued and some rotated, the manager is killed with
//     SIGKILL at random moments (a seeded schedule) and restarted each time; at the end
//     nothing may be lost, nothing minted twice, and nothing adopted but after a kill.
//   - TestEtcdStopped, TestAPIServerRestarted: under token load, etcd is stopped for 30 s,
//     or the API server killed and started again; both processes stay up and ready and the
//     token endpoint keeps issuing from the token server's cache.
//
// Their summary lines start with "faults:".
//
// The admission webhook is not served here (--enable-webhooks=false): with one replica
// killed twenty times, every create sent while it is down would be refused by the
// webhook's failurePolicy, which is test/ha's subject (admission across a failover), not
// this one's (the reconciler's crash safety).
package faults

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

var (
	seedFlag    = flag.Uint64("seed", 0, "seed of the kill schedule; 0 picks one from the clock (printed)")
	killsFlag   = flag.Int("kills", 20, "how many times the manager is killed with SIGKILL")
	credsFlag   = flag.Int("credentials", 500, "how many credentials are created")
	rotateFlag  = flag.Int("rotate", 50, "how many of them are rotated (spec.rotation.keyVersion bumped) once issued")
	minUptime   = flag.Duration("min-uptime", 200*time.Millisecond, "shortest time a manager runs before it is killed")
	maxUptime   = flag.Duration("max-uptime", 2500*time.Millisecond, "longest time a manager runs before it is killed")
	workersFlag = flag.Int("workers", 0, "the manager's --max-concurrent-reconciles; 0 for its default")
)

const (
	systemNamespace = "keysmith-system"
	tenantNamespace = "team-faults"
	managerUser     = "system:serviceaccount:" + systemNamespace + ":keysmith-manager"
	creators        = 8
	adoptedMsg      = `"msg":"adopted credential Secret"`
	issuedMsg       = `"msg":"issued credential"`
)

// TestKill9 kills the manager at random moments while credentials are issued and rotated.
func TestKill9(t *testing.T) {
	started := time.Now()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("faults: seed=%d (rerun with -args -seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nCreds, nRotate, nKills := *credsFlag, *rotateFlag, *killsFlag

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g := NewWithT(t)
	dir := t.TempDir()

	build := make(chan error, 1)
	go func() { build <- testenv.Build(ctx, dir, "./cmd/manager") }()
	env, cfg := testenv.StartT(t)
	cfg.QPS = -1
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testenv.InstallShipped(ctx, c, systemNamespace, tenantNamespace)).To(Succeed())

	kubeconfig, _, err := testenv.UserKubeconfig(env, cfg, managerUser, dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(<-build).To(Succeed())
	bin := testenv.Binary(dir, "./cmd/manager")
	t.Logf("%6.2fs control plane up, manager built", time.Since(started).Seconds())

	rec := newRecorder()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	g.Expect(rec.start(watchCtx, c)).To(Succeed())

	// The schedule: incarnation i runs from starts[i] until kills[i] (the last one is
	// never killed).
	var procs []*managerProc
	var starts, kills []time.Time
	addrs, err := testenv.FreeAddrs(2)
	g.Expect(err).NotTo(HaveOccurred())
	startOne := func() *managerProc {
		m, err := startManager(t, bin, dir, len(procs), kubeconfig, addrs)
		g.Expect(err).NotTo(HaveOccurred())
		procs = append(procs, m)
		starts = append(starts, m.Started)
		return m
	}
	m := startOne()
	loadStart := time.Now()

	// Creating: creators concurrent clients, each create retried until it is stored.
	var load sync.WaitGroup
	names := make(chan string)
	var createErrs sync.Map
	for range creators {
		load.Go(func() {
			for name := range names {
				for ctx.Err() == nil {
					if err := c.Create(ctx, newCredential(name)); err == nil {
						break
					} else {
						createErrs.Store(name, err.Error())
					}
				}
			}
		})
	}
	load.Go(func() {
		defer close(names)
		for i := range nCreds {
			select {
			case names <- fmt.Sprintf("cred-%03d", i):
			case <-ctx.Done():
				return
			}
		}
	})

	// Rotating: once a credential is issued (status.keyVersion 0 with a secretRef), the
	// first nRotate of them in creation order get keyVersion 1, as soon as at least a tenth
	// of all are Ready, so that rotations run beside issuing.
	rotated := map[string]bool{}
	rotateDone := make(chan struct{})
	load.Go(func() {
		defer close(rotateDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for len(rotated) < nRotate && ctx.Err() == nil {
			<-tick.C
			list := &iamv1alpha1.APICredentialList{}
			if err := c.List(ctx, list, client.InNamespace(tenantNamespace)); err != nil {
				continue
			}
			ready := 0
			for i := range list.Items {
				if isReady(&list.Items[i]) {
					ready++
				}
			}
			if ready < max(nCreds/10, 1) {
				continue
			}
			for i := range list.Items {
				cred := &list.Items[i]
				if len(rotated) == nRotate {
					break
				}
				if rotated[cred.Name] || !isReady(cred) {
					continue
				}
				patch := client.MergeFrom(cred.DeepCopy())
				cred.Spec.Rotation.KeyVersion = 1
				if err := c.Patch(ctx, cred, patch); err == nil {
					rotated[cred.Name] = true
				}
			}
		}
	})

	// Killing: each incarnation runs for a random time, then SIGKILL, then the next.
	for k := range nKills {
		uptime := *minUptime + time.Duration(rng.Int64N(int64(*maxUptime-*minUptime)+1))
		select {
		case <-time.After(time.Until(m.Started.Add(uptime))):
		case <-m.Exited:
			t.Fatalf("manager %d exited by itself: %v\n%s", m.n, m.WaitErr, tail(m.log(), 60))
		}
		m.kill()
		kills = append(kills, m.killedAt)
		st := rec.snapshot()
		t.Logf("%6.2fs kill %2d: manager %d (pid %d) after %4dms; %d created, %d Ready, %d rotated so far",
			time.Since(started).Seconds(), k+1, m.n, m.Pid(), uptime.Milliseconds(), st.created, st.ready, st.rotatedReady)
		m = startOne()
	}
	load.Wait()
	<-rotateDone
	killsDone := time.Now()
	t.Logf("%6.2fs %d kills done; the last manager (%d) runs on", time.Since(started).Seconds(), len(kills), m.n)

	// Settling: every credential Ready at its spec's key version, its Secret's data seen
	// by the watch.
	g.Eventually(func(g Gomega) {
		if !m.Running() {
			StopTrying(fmt.Sprintf("manager %d exited: %v", m.n, m.WaitErr)).Now()
		}
		g.Expect(pending(ctx, c, rec, rotated)).To(BeEmpty())
	}).WithContext(ctx).WithTimeout(60*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "every credential Ready, rotations recorded")
	settled := time.Now()

	// Checks.
	list := &iamv1alpha1.APICredentialList{}
	g.Expect(c.List(ctx, list, client.InNamespace(tenantNamespace))).To(Succeed())
	g.Expect(list.Items).To(HaveLen(nCreds))
	lost, duplicates := 0, 0
	for i := range list.Items {
		cred := &list.Items[i]
		wantVersion := int64(0)
		if rotated[cred.Name] {
			wantVersion = 1
		}
		if !isReady(cred) || cred.Status.KeyVersion != wantVersion || cred.Status.SecretRef == nil {
			lost++
			t.Errorf("%s: not Ready at key version %d: %+v", cred.Name, wantVersion, cred.Status.Conditions)
			continue
		}
		secret := &corev1.Secret{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: tenantNamespace, Name: cred.Status.SecretRef.Name}, secret)).To(Succeed())
		keys := cred.Spec.SecretKeyNames()
		// Compared as hashes, so that a failure never prints a secret.
		if got := credential.Hash(string(secret.Data[keys.ClientSecret])); got != cred.Status.SecretHash {
			lost++
			t.Errorf("%s: its Secret's %s does not hash to status.secretHash", cred.Name, keys.ClientSecret)
		}
		if v := secret.Annotations[iamv1alpha1.KeyVersionAnnotation]; v != strconv.FormatInt(wantVersion, 10) {
			lost++
			t.Errorf("%s: its Secret's %s is %q, want %d", cred.Name, iamv1alpha1.KeyVersionAnnotation, v, wantVersion)
		}
		versions := rec.Counts(secret.Name)
		for version, values := range versions {
			if values != 1 {
				duplicates += values - 1
				t.Errorf("%s: CLIENT_SECRET took %d values for key version %s through the run", cred.Name, values, version)
			}
		}
		if !rec.SeenHash(secret.Name, strconv.FormatInt(wantVersion, 10), cred.Status.SecretHash) {
			t.Errorf("%s: the watch never saw the Secret's current value", cred.Name)
		}
		if want := int(wantVersion) + 1; len(versions) != want {
			t.Errorf("%s: the watch saw CLIENT_SECRET values for %d key versions, want %d", cred.Name, len(versions), want)
		}
	}
	g.Expect(rec.problems()).To(BeEmpty(), "the Secret watch saw everything, and no credential Secret was deleted")

	// A restart with no kill before it: the last manager is stopped with SIGTERM and a new
	// one reconciles every credential once; it may issue, rotate and adopt nothing.
	g.Expect(m.Signal(syscall.SIGTERM)).To(Succeed())
	select {
	case <-m.Exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("manager %d did not stop on SIGTERM", m.n)
	}
	clean := startOne()
	cleanStart := time.Now()
	var reconciled, cleanIssued, cleanRotated, cleanAdopted float64
	g.Eventually(func(g Gomega) {
		if !clean.Running() {
			StopTrying(fmt.Sprintf("manager %d exited: %v", clean.n, clean.WaitErr)).Now()
		}
		text, err := scrape(ctx, addrs[1])
		g.Expect(err).NotTo(HaveOccurred())
		reconciled = metric(text, `controller_runtime_reconcile_total{controller="apicredential"`)
		cleanIssued = metric(text, "keysmith_credentials_issued_total")
		cleanRotated = metric(text, "keysmith_credentials_rotated_total")
		cleanAdopted = metric(text, "keysmith_credentials_adopted_total")
		g.Expect(reconciled).To(BeNumerically(">=", nCreds))
	}).WithContext(ctx).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(),
		"the manager restarted without a kill reconciles every credential")
	t.Logf("restart without a kill: %d reconciles in %.2fs; issued %v, rotated %v, adopted %v",
		int(reconciled), time.Since(cleanStart).Seconds(), cleanIssued, cleanRotated, cleanAdopted)
	g.Expect(cleanIssued+cleanRotated+cleanAdopted).To(BeZero(), "a restart with no kill before it issues, rotates and adopts nothing")

	// Adoptions: each Adopted event, and each adoption a manager logged, in an
	// incarnation started after a kill. The first incarnation started over nothing.
	evs := &eventsv1.EventList{}
	g.Expect(c.List(ctx, evs, client.InNamespace(tenantNamespace))).To(Succeed())
	adoptions, issuedEvents := 0, 0
	var adoptLead []time.Duration
	perIncarnation := make([]int, len(procs))
	for _, ev := range evs.Items {
		switch ev.Reason {
		case iamv1alpha1.ReasonIssued:
			issuedEvents++
		case "Adopted":
			adoptions++
			at := ev.EventTime.Time
			if at.IsZero() {
				at = ev.CreationTimestamp.Time
			}
			i := incarnation(starts, at)
			if i < 0 {
				t.Errorf("Adopted event for %s at %s, before the first manager started", ev.Regarding.Name, at.Format(time.RFC3339Nano))
				continue
			}
			perIncarnation[i]++
			if i == 0 || i == clean.n {
				t.Errorf("Adopted event for %s at %s from manager %d, which followed no kill", ev.Regarding.Name, at.Format(time.RFC3339Nano), i)
			}
			// How long before the adopting manager started the watch saw the Secret's
			// newest value before the event: a figure, since the watch's lag is not bounded.
			if name := secretOf(list, ev.Regarding.Name); name != "" {
				if seen, ok := rec.LastSeenBefore(name, at); ok {
					lead := starts[i].Sub(seen)
					adoptLead = append(adoptLead, lead)
				}
			}
		}
	}
	loggedAdoptions, loggedIssues := 0, 0
	for i, p := range procs {
		n := p.logged(adoptedMsg)
		loggedAdoptions += n
		loggedIssues += p.logged(issuedMsg)
		if (i == 0 || i == clean.n) && n > 0 {
			t.Errorf("manager %d, which followed no kill, logged %d adoptions", i, n)
		}
	}
	// The last manager's events are all recorded by now; a killed one's last events may
	// have died with it, so the events are at most the logged adoptions.
	if adoptions > loggedAdoptions {
		t.Errorf("%d Adopted events but %d adoptions logged", adoptions, loggedAdoptions)
	}
	t.Logf("adoptions by incarnation (events): %v; logged: adoptions %d, issues %d; Issued events %d; create retries %d",
		perIncarnation, loggedAdoptions, loggedIssues, issuedEvents, countMap(&createErrs))
	if len(adoptLead) > 0 {
		slices.Sort(adoptLead)
		t.Logf("adopted Secrets' values seen by the watch before the adopting manager started: min %s, max %s (negative: after)",
			adoptLead[0].Round(time.Millisecond), adoptLead[len(adoptLead)-1].Round(time.Millisecond))
	}
	t.Logf("timing: load %0.1fs until the kills ended, settled %.1fs after the last kill, test %.1fs",
		killsDone.Sub(loadStart).Seconds(), settled.Sub(killsDone).Seconds(), time.Since(started).Seconds())
	t.Logf("faults: seed=%d kills=%d credentials=%d rotated=%d duplicates=%d lost=%d adoptions=%d elapsed=%.1fs",
		seed, len(kills), nCreds, len(rotated), duplicates, lost, adoptions, time.Since(started).Seconds())
	g.Expect(len(kills)).To(BeNumerically(">=", nKills))
	g.Expect(len(rotated)).To(Equal(nRotate))
	g.Expect(duplicates).To(BeZero(), "no secret minted twice for one key version")
	g.Expect(lost).To(BeZero(), "every credential Ready, its Secret holding the secret its status names")
}

// incarnation returns the index of the manager that ran at t: the last one started
// before t, or -1.
func incarnation(starts []time.Time, t time.Time) int {
	i := -1
	for j, s := range starts {
		if !s.After(t) {
			i = j
		}
	}
	return i
}

// pending names the credentials not yet Ready at their key version with the watch having
// seen their Secret's value.
func pending(ctx context.Context, c client.Client, rec *recorder, rotated map[string]bool) []string {
	list := &iamv1alpha1.APICredentialList{}
	if err := c.List(ctx, list, client.InNamespace(tenantNamespace)); err != nil {
		return []string{err.Error()}
	}
	var out []string
	for i := range list.Items {
		cred := &list.Items[i]
		want := int64(0)
		if rotated[cred.Name] {
			want = 1
		}
		if !isReady(cred) || cred.Status.KeyVersion != want || cred.Status.SecretRef == nil ||
			!rec.SeenHash(cred.Status.SecretRef.Name, strconv.FormatInt(want, 10), cred.Status.SecretHash) {
			out = append(out, cred.Name)
		}
	}
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("… %d more", len(out)-10))
	}
	return out
}

// secretOf returns the name of the Secret of the credential called name in list.
func secretOf(list *iamv1alpha1.APICredentialList, name string) string {
	for i := range list.Items {
		if list.Items[i].Name == name && list.Items[i].Status.SecretRef != nil {
			return list.Items[i].Status.SecretRef.Name
		}
	}
	return ""
}

// scrape reads a manager's Prometheus metrics.
func scrape(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return string(data), nil
}

// metric sums the samples of the text exposition whose line starts with prefix (a name,
// or a name and the first labels).
func metric(text, prefix string) float64 {
	sum := 0.0
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' && rest[0] != ',' && rest[0] != '}' {
			continue // another metric whose name begins with prefix
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func isReady(cred *iamv1alpha1.APICredential) bool {
	c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == iamv1alpha1.ReasonIssued &&
		c.ObservedGeneration == cred.Generation
}

func countMap(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

func newCredential(name string) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: tenantNamespace, Name: name},
		Spec: iamv1alpha1.APICredentialSpec{
			DisplayName: "faults test " + name,
			APIs:        []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
		},
	}
}

// managerProc is one manager process (one incarnation).
type managerProc struct {
	*proc.Proc
	n        int
	killedAt time.Time
}

// startManager runs the manager binary as keysmith-manager without leader election and
// without webhooks, its output in a log file of dir, probes and metrics on addrs. The
// process is killed when the test ends, and its log's tail printed if the test failed.
func startManager(t *testing.T, bin, dir string, n int, kubeconfig string, addrs []string) (*managerProc, error) {
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--enable-webhooks=false",
		"--signing-key-namespace=" + systemNamespace,
		"--health-probe-bind-address=" + addrs[0],
		"--metrics-bind-address=" + addrs[1],
	}
	if *workersFlag > 0 {
		args = append(args, "--max-concurrent-reconciles="+strconv.Itoa(*workersFlag))
	}
	return startProc(t, dir, fmt.Sprintf("manager-%02d", n), n, bin, args...)
}

// startProc runs bin with args, POD_NAMESPACE set to the system namespace and its output
// in dir/name.log. The process is killed when the test ends, and its log's tail printed if
// the test failed.
func startProc(t *testing.T, dir, name string, n int, bin string, args ...string) (*managerProc, error) {
	p, err := proc.Start(dir, name, bin, []string{"POD_NAMESPACE=" + systemNamespace}, args...)
	if err != nil {
		return nil, err
	}
	m := &managerProc{Proc: p, n: n}
	t.Cleanup(func() {
		m.kill()
		if t.Failed() {
			t.Logf("--- %s (%s), pid %d, %v:\n%s", name, m.LogPath, m.Pid(), m.WaitErr, tail(m.log(), 40))
		}
	})
	return m, nil
}

// kill sends SIGKILL and waits until the process is reaped: its sockets are closed then,
// and the next incarnation can bind the same addresses.
func (m *managerProc) kill() {
	if m.killedAt.IsZero() {
		m.killedAt = time.Now()
	}
	m.Kill()
}

func (m *managerProc) log() []byte {
	data, _ := os.ReadFile(m.LogPath)
	return data
}

func (m *managerProc) logged(s string) int { return bytes.Count(m.log(), []byte(s)) }

func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"… " + strconv.Itoa(len(lines)-n) + " lines before"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// recorder follows, through watches started before the first credential is created,
// every value each Secret's CLIENT_SECRET took for each key version
// (testenv.SecretValues) and how many credentials are created and Ready. It keeps
// hashes, never a secret.
type recorder struct {
	*testenv.SecretValues
	mu    sync.Mutex
	creds map[string]*iamv1alpha1.APICredential
	errs  []error
}

type snapshot struct{ created, ready, rotatedReady int }

func newRecorder() *recorder {
	return &recorder{creds: map[string]*iamv1alpha1.APICredential{}}
}

func (r *recorder) start(ctx context.Context, c client.WithWatch) error {
	secrets, err := testenv.WatchSecretValues(ctx, c, tenantNamespace)
	if err != nil {
		return err
	}
	r.SecretValues = secrets
	creds, err := c.Watch(ctx, &iamv1alpha1.APICredentialList{}, client.InNamespace(tenantNamespace))
	if err != nil {
		return err
	}
	go testenv.Follow(ctx, "APICredentials", creds, r.credential, r.fail)
	return nil
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *recorder) credential(t watch.EventType, obj client.Object) {
	cred := obj.(*iamv1alpha1.APICredential)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t == watch.Deleted {
		delete(r.creds, cred.Name)
		return
	}
	r.creds[cred.Name] = cred
}

func (r *recorder) snapshot() snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s snapshot
	for _, cred := range r.creds {
		s.created++
		if isReady(cred) {
			s.ready++
			if cred.Status.KeyVersion == 1 {
				s.rotatedReady++
			}
		}
	}
	return s
}

// problems returns the Secrets seen deleted and the watches' failures.
func (r *recorder) problems() []string {
	deleted, errs := r.Problems()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, name := range deleted {
		out = append(out, "deleted Secret "+name)
	}
	for _, err := range append(errs, r.errs...) {
		out = append(out, err.Error())
	}
	return out
}
