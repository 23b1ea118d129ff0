// Package ha proves keysmith's high availability with two manager processes, built from
// ./cmd/manager, against one real API server (envtest): both serve the admission webhook
// behind a load balancer, one leads; the leader is killed with SIGKILL while it is
// issuing, and the other takes over. The test measures the takeover and shows that
// admission keeps answering and that no credential is minted twice.
package ha

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

const (
	systemNamespace   = "keysmith-system"
	tenantNamespace   = "team-ha"
	leaseName         = "manager.iam.keysmith.dev"
	webhookConfigName = "keysmith-validating-webhook"
	// managerUser is the manager's service account, which the shipped RBAC binds and the
	// status policy names: the managers run as it, not as an administrator.
	managerUser = "system:serviceaccount:" + systemNamespace + ":keysmith-manager"

	// credentials are created in bursts of burstSize, burstPause apart, by creators
	// concurrent clients; the leader is killed once killAtReady of them are Ready, so
	// that the later bursts arrive while nobody leads.
	credentials   = 300
	burstSize     = 50
	burstPause    = time.Second
	creators      = 8
	killAtReady   = credentials / 5
	probeInterval = 50 * time.Millisecond
)

// TestFailover kills the leading manager mid-way through issuing 300 credentials.
//
// Admission: a goroutine sends a server-side dry-run create of a valid APICredential
// every 50 ms from before the first create until every credential is Ready; the creates
// themselves are admission requests too. Every error of either counts as a failed
// admission: the objects are valid, so even a refusal would be a wrong answer (a survivor
// whose catalog cache was not ready, say). The kill is taken between two admission
// requests (admissions.gate): a request in flight on a process killed by SIGKILL is lost
// whatever the number of replicas, because the API server does not retry a webhook POST;
// what HA must show is that the next requests are answered, by the other replica.
func TestFailover(t *testing.T) {
	started := time.Now()
	lease, renew, retry := *leaseDuration, *renewDeadline, *retryPeriod
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+4*lease)
	defer cancel()
	g := NewWithT(t)
	dir := t.TempDir()

	type built struct {
		bin  string
		err  error
		took time.Duration
	}
	build := make(chan built, 1)
	go func() {
		err := testenv.Build(ctx, dir, "./cmd/manager")
		build <- built{testenv.Binary(dir, "./cmd/manager"), err, time.Since(started)}
	}()

	env, cfg := testenv.StartT(t)
	t.Logf("%6.2fs control plane up", time.Since(started).Seconds())
	cfg.QPS = -1 // no client-side rate limit: the creators are the load
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testenv.InstallShipped(ctx, c, systemNamespace, tenantNamespace)).To(Succeed())

	managerKubeconfig, _, err := testenv.UserKubeconfig(env, cfg, managerUser, dir)
	g.Expect(err).NotTo(HaveOccurred())

	ca, err := newTestCA()
	g.Expect(err).NotTo(HaveOccurred())
	b := <-build
	g.Expect(b.err).NotTo(HaveOccurred())
	t.Logf("%6.2fs built ./cmd/manager", b.took.Seconds())
	setupDone := time.Now()

	step := func(what string) { t.Logf("%6.2fs %s", time.Since(started).Seconds(), what) }
	step("starting two managers with leader election")
	var managers []*managerProc
	addrs, err := testenv.FreeAddrs(6)
	g.Expect(err).NotTo(HaveOccurred())
	for i, name := range []string{"manager-a", "manager-b"} {
		certDir := filepath.Join(dir, name, "webhook-certs")
		g.Expect(ca.writeServing(certDir, int64(i+2))).To(Succeed())
		m, err := startManager(t, b.bin, dir, name, managerKubeconfig, certDir, addrs[3*i:3*i+3])
		g.Expect(err).NotTo(HaveOccurred())
		managers = append(managers, m)
	}
	g.Eventually(func() bool {
		managers[0].mustRun()
		managers[1].mustRun()
		return managers[0].ready(ctx) && managers[1].ready(ctx)
	}).
		WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(BeTrue(), "both managers ready (their webhook servers started)")

	step("finding the leader: the Lease holder, and the one process whose log says it acquired it")
	var leader, survivor *managerProc
	var oldHolder string
	g.Eventually(func(g Gomega) {
		lease := &coordinationv1.Lease{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: leaseName}, lease)).To(Succeed())
		managers[0].mustRun()
		managers[1].mustRun()
		g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
		oldHolder = *lease.Spec.HolderIdentity
		a, b := managers[0].acquired(), managers[1].acquired()
		g.Expect(a != b).To(BeTrue(), "exactly one manager has acquired the lease")
		leader, survivor = managers[0], managers[1]
		if b {
			leader, survivor = managers[1], managers[0]
		}
	}).WithTimeout(2*(lease+retry) + 10*time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	t.Logf("leader %s (lease holder %s), follower %s", leader.name, oldHolder, survivor.name)

	step("routing admission through a load balancer over both webhook servers")
	lb, err := startBalancer([]string{managers[0].webhookAddr, managers[1].webhookAddr})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = lb.close() })
	if leader == managers[1] {
		lb.startAt(1)
	} else {
		lb.startAt(0)
	}
	// The leader gets the first connection: the killed replica is the one serving admission.
	g.Expect(installWebhook(ctx, c, ca.pem, lb.addr())).To(Succeed())
	adm := &admissions{}
	probe := probeCredential()
	g.Eventually(func() error {
		return c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
	}).WithTimeout(20*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "the webhook answers a dry-run create")

	rec := newRecorder()
	watchCtx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	g.Expect(rec.start(watchCtx, c)).To(Succeed())

	step("probing admission every 50ms, and creating the credentials in bursts")
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probing sync.WaitGroup
	probing.Go(func() {
		tick := time.NewTicker(probeInterval)
		defer tick.Stop()
		for {
			select {
			case <-probeCtx.Done():
				return
			case <-tick.C:
				_ = adm.do(probeCtx, "dry-run", func() error { return c.Create(probeCtx, probe.DeepCopy(), client.DryRunAll) })
			}
		}
	})
	var creating sync.WaitGroup
	creating.Go(func() { createCredentials(ctx, c, adm) })

	g.Eventually(func() int { leader.mustRun(); survivor.mustRun(); return rec.readyCount() }).
		WithTimeout(30*time.Second).WithPolling(5*time.Millisecond).Should(BeNumerically(">=", killAtReady),
		"the leader issues credentials")
	g.Expect(lb.snapshot(leader.webhookAddr).active).To(BeNumerically(">=", 1), "the leader serves admission when it is killed")
	survivorConns := lb.snapshot(survivor.webhookAddr).conns

	var killedAt time.Time
	var readyAtKill int
	func() {
		adm.gate.Lock()
		defer adm.gate.Unlock()
		killedAt = time.Now()
		leader.kill()
		readyAtKill = rec.readyCount()
		// The balancer has seen the killed backend's connections end, and so closed the
		// API server's: as the connections to a dead pod end.
		g.Eventually(func() int { return lb.snapshot(leader.webhookAddr).active }).
			WithTimeout(2*time.Second).WithPolling(time.Millisecond).Should(BeZero(), "the balancer drops the dead backend's connections")
		// And the API server has closed its end of them: until it reads the close, its
		// next request may still be written to one of them (a broken pipe, lost to the kill
		// as a request in flight is, not to a missing replica). On a loaded machine that
		// read can come after the next probe is due.
		g.Eventually(lb.awaitingPeerClose).
			WithTimeout(2*time.Second).WithPolling(time.Millisecond).Should(BeZero(), "the API server closes the connections the balancer ended")
	}()
	step(fmt.Sprintf("killed the leader %s (pid %d) with %d of %d credentials Ready", leader.name, leader.cmd.Process.Pid, readyAtKill, credentials))
	g.Expect(readyAtKill).To(BeNumerically("<", credentials), "the leader is killed mid-way through issuing")
	before := readyNames(ctx, g, c)

	var took holderChange
	g.Eventually(func() (ok bool) { survivor.mustRun(); took, ok = rec.takeover(oldHolder, killedAt); return ok }).
		WithTimeout(2*(lease+retry)+10*time.Second).WithPolling(10*time.Millisecond).Should(BeTrue(), "another manager takes the lease")
	g.Eventually(survivor.acquired).WithTimeout(5*time.Second).WithPolling(50*time.Millisecond).Should(BeTrue(),
		"the new holder is the surviving process")
	step(fmt.Sprintf("%s took the lease as %s", survivor.name, took.identity))
	var firstReady time.Time
	g.Eventually(func() (ok bool) {
		survivor.mustRun()
		firstReady, ok = rec.firstReadyAfter(killedAt, before)
		return ok
	}).
		WithTimeout(20*time.Second).WithPolling(10*time.Millisecond).Should(BeTrue(), "a credential becomes Ready after the kill")

	creating.Wait()
	g.Eventually(func() int { survivor.mustRun(); return rec.readyCount() }).
		WithTimeout(60*time.Second).WithPolling(50*time.Millisecond).Should(Equal(credentials), "every credential Ready")
	allReady := time.Now()
	stopProbe()
	probing.Wait()

	step("checking every credential and its Secret")
	checkCredentials(ctx, g, c, rec)
	deleted, watchErrs := rec.problems()
	g.Expect(watchErrs).To(BeEmpty(), "the watches saw everything")
	g.Expect(deleted).To(BeEmpty(), "no credential Secret was deleted")
	g.Expect(survivor.running()).To(BeTrue(), "the surviving manager still runs")

	probes, probesFailed, probeErrs := adm.count("dry-run", started, allReady.Add(time.Hour))
	windowProbes, windowFailed, _ := adm.count("dry-run", killedAt, took.at)
	creates, createsFailed, createErrs := adm.count("create", started, allReady.Add(time.Hour))
	windowCreates, windowCreatesFailed, _ := adm.count("create", killedAt, took.at)
	g.Expect(probesFailed).To(BeZero(), "dry-run admissions failed: %v", probeErrs)
	g.Expect(createsFailed).To(BeZero(), "creates failed: %v", createErrs)
	g.Expect(windowProbes-windowFailed).To(BeNumerically(">", 0), "admission answered while nobody led")
	g.Expect(lb.snapshot(survivor.webhookAddr).conns).To(BeNumerically(">", survivorConns), "the survivor served admission after the kill")
	issuedByLeader, issuedBySurvivor := leader.logged(issuedMsg), survivor.logged(issuedMsg)
	adoptions := survivor.logged(adoptedMsg)
	g.Expect(issuedBySurvivor+adoptions).To(BeNumerically(">", 0), "the survivor took over the issuing")

	a, bstats := lb.snapshot(managers[0].webhookAddr), lb.snapshot(managers[1].webhookAddr)
	t.Logf("balancer: %s %d connections (%d refused), %s %d connections (%d refused)",
		managers[0].name, a.conns, a.refused, managers[1].name, bstats.conns, bstats.refused)
	// A credential in neither count was issued by the leader, which was killed between
	// writing its status and logging it.
	t.Logf("issued by %s %d, by %s %d; adoptions (a Secret the killed leader wrote, recorded by the survivor) %d, Adopted events %d; logged by neither %d",
		leader.name, issuedByLeader, survivor.name, issuedBySurvivor, adoptions, countEvents(ctx, g, c, "Adopted"),
		credentials-issuedByLeader-issuedBySurvivor-adoptions)
	t.Logf("ha: takeover %.2fs (lease %s, renew %s, retry %s); first Ready after kill %.2fs; admission %d failed of %d (%d answered during the takeover; creates %d failed of %d, %d admitted during the takeover); all %d Ready %.2fs after kill; setup %.1fs, test %.1fs",
		took.at.Sub(killedAt).Seconds(), lease, renew, retry,
		firstReady.Sub(killedAt).Seconds(), probesFailed, probes, windowProbes-windowFailed, createsFailed, creates, windowCreates-windowCreatesFailed,
		credentials, allReady.Sub(killedAt).Seconds(), setupDone.Sub(started).Seconds(), time.Since(started).Seconds())
}

// installWebhook creates the webhook configuration of config/webhook/manifests.yaml,
// named as the installs name it, with each webhook's clientConfig pointed at the load
// balancer (its service path kept) and the test CA as caBundle.
func installWebhook(ctx context.Context, c client.Client, caBundle []byte, addr string) error {
	objs, err := testenv.ReadObjects(filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml"), systemNamespace)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if obj.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, cfg); err != nil {
			return err
		}
		cfg.Name = webhookConfigName
		for i := range cfg.Webhooks {
			w := &cfg.Webhooks[i]
			if w.ClientConfig.Service == nil || w.ClientConfig.Service.Path == nil {
				return fmt.Errorf("webhook %s names no service path", w.Name)
			}
			url := "https://" + addr + *w.ClientConfig.Service.Path
			w.ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
		}
		return c.Create(ctx, cfg)
	}
	return fmt.Errorf("config/webhook/manifests.yaml holds no ValidatingWebhookConfiguration")
}

// probeCredential is the valid APICredential the dry-run creates send.
func probeCredential() *iamv1alpha1.APICredential {
	return newCredential("admission-probe")
}

func newCredential(name string) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: tenantNamespace, Name: name},
		Spec: iamv1alpha1.APICredentialSpec{
			DisplayName: "HA test " + name,
			APIs:        []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
		},
	}
}

// createCredentials creates the credentials in bursts, each by concurrent creators.
func createCredentials(ctx context.Context, c client.Client, adm *admissions) {
	for first := 0; first < credentials; first += burstSize {
		names := make(chan string)
		var wg sync.WaitGroup
		for range creators {
			wg.Go(func() {
				for name := range names {
					_ = adm.do(ctx, "create", func() error { return c.Create(ctx, newCredential(name)) })
				}
			})
		}
		for i := first; i < min(first+burstSize, credentials); i++ {
			names <- fmt.Sprintf("cred-%03d", i)
		}
		close(names)
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-time.After(burstPause):
		}
	}
}

// countEvents counts the events.k8s.io Events of the tenant namespace with a reason.
func countEvents(ctx context.Context, g *WithT, c client.Client, reason string) int {
	list := &eventsv1.EventList{}
	g.Expect(c.List(ctx, list, client.InNamespace(tenantNamespace))).To(Succeed())
	n := 0
	for _, ev := range list.Items {
		if ev.Reason == reason {
			n++
		}
	}
	return n
}

// readyNames reads the credentials Ready now from the API server.
func readyNames(ctx context.Context, g *WithT, c client.Client) map[string]bool {
	list := &iamv1alpha1.APICredentialList{}
	g.Expect(c.List(ctx, list, client.InNamespace(tenantNamespace))).To(Succeed())
	out := map[string]bool{}
	for _, cred := range list.Items {
		if meta.IsStatusConditionTrue(cred.Status.Conditions, iamv1alpha1.ConditionReady) {
			out[cred.Name] = true
		}
	}
	return out
}

// checkCredentials checks that every credential is Ready and Issued, that its Secret's
// CLIENT_SECRET hashes to status.secretHash and carries status.clientID, and that,
// through the whole run, that CLIENT_SECRET took exactly one value for its key version:
// nothing was minted twice.
func checkCredentials(ctx context.Context, g *WithT, c client.Client, rec *recorder) {
	list := &iamv1alpha1.APICredentialList{}
	g.Expect(c.List(ctx, list, client.InNamespace(tenantNamespace))).To(Succeed())
	g.Expect(list.Items).To(HaveLen(credentials))
	for i := range list.Items {
		cred := &list.Items[i]
		ready := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
		g.Expect(ready).NotTo(BeNil(), cred.Name)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), cred.Name)
		g.Expect(ready.Reason).To(Equal(iamv1alpha1.ReasonIssued), cred.Name)
		g.Expect(cred.Status.SecretRef).NotTo(BeNil(), cred.Name)

		secret := &corev1.Secret{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: tenantNamespace, Name: cred.Status.SecretRef.Name}, secret)).To(Succeed())
		keys := cred.Spec.SecretKeyNames()
		// Compared as hashes, so that a failure never prints a secret.
		g.Expect(credential.Hash(string(secret.Data[keys.ClientSecret]))).To(Equal(cred.Status.SecretHash),
			"%s: its Secret's %s hashes to status.secretHash", cred.Name, keys.ClientSecret)
		g.Expect(string(secret.Data[keys.ClientID])).To(Equal(cred.Status.ClientID), cred.Name)
		version := secret.Annotations[iamv1alpha1.KeyVersionAnnotation]
		g.Expect(rec.Counts(secret.Name)).To(Equal(map[string]int{version: 1}),
			"%s: its CLIENT_SECRET took one value, for key version %s, through the run", cred.Name, version)
		g.Expect(rec.SeenHash(secret.Name, version, cred.Status.SecretHash)).To(BeTrue(), cred.Name)
	}
}
