package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// startManager runs the reconciler in a manager, as cmd/manager does, watching only ns.
// It returns a function that stops the manager and waits for it.
func startManager(ctx context.Context, ns string) (stop func()) {
	return startManagerWith(ctx, ns, nil)
}

// startManagerWith is startManager with the reconciler's client wrapped by wrap, if set.
func startManagerWith(ctx context.Context, ns string, wrap func(client.Client) client.Client) (stop func()) {
	GinkgoHelper()
	_, _, stopMgr := startManagerSetup(ctx, ns, managerSetup{client: wrap})
	return func() { GinkgoHelper(); Expect(stopMgr()).To(Succeed()) }
}

// managerSetup is how a test's manager differs from startManager's.
type managerSetup struct {
	// keyNamespace holds the binding key ("": the watched namespace, where it outlives
	// restarts of the manager).
	keyNamespace string
	// client and reader, if set, wrap the credential reconciler's client and live reader.
	client func(client.Client) client.Client
	reader func(client.Reader) client.Reader
}

// startManagerSetup runs the reconcilers as cmd/manager does, the credentials' cache on
// ns, changed as s says; stop stops the manager and reports how it ended.
func startManagerSetup(ctx context.Context, ns string, s managerSetup) (r *APICredentialReconciler, keys *BindingKeyReconciler, stop func() error) {
	GinkgoHelper()
	opts := CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  opts,
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	keyNS := s.keyNamespace
	if keyNS == "" {
		keyNS = ns
	}
	keys = &BindingKeyReconciler{Client: mgr.GetClient(), Namespace: keyNS, Name: bindingKeySecret}
	Expect(keys.SetupWithManager(mgr)).To(Succeed())
	var c client.Client = mgr.GetClient()
	if s.client != nil {
		c = s.client(c)
	}
	var reader client.Reader = mgr.GetAPIReader()
	if s.reader != nil {
		reader = s.reader(reader)
	}
	r = &APICredentialReconciler{
		Client: c, APIReader: reader, Scheme: scheme,
		Clock: clock.RealClock{}, Recorder: mgr.GetEventRecorder("keysmith-manager"), DefaultTokenURL: testTokenURL,
		BindingKeys: keys,
		// The manager's default (--max-concurrent-reconciles): every manager test, run
		// with -race, runs with concurrent workers.
		MaxConcurrentReconciles: 4,
	}
	Expect(r.SetupWithManager(ctx, mgr)).To(Succeed())
	return r, keys, testenv.Start(ctx, mgr)
}

// metricValue reads a counter or gauge with the given labels from the manager's registry.
func metricValue(name string, want map[string]string) float64 {
	families, err := ctrlmetrics.Registry.Gather()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// reconcileCount reads controller_runtime_reconcile_total for successful reconciles of
// APICredentials from the metrics registry the managers share.
func reconcileCount() float64 {
	families, err := ctrlmetrics.Registry.Gather()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	total := 0.0
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["controller"] == "apicredential" && labels["result"] == "success" {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

var _ = Describe("APICredential with the manager running", func() {
	var (
		ns   string
		stop func()
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
		stop = startManager(ctx, ns)
		DeferCleanup(func() { stop() })
	})

	get := func(ctx context.Context, name string) func(Gomega) *iamv1alpha1.APICredential {
		return func(g Gomega) *iamv1alpha1.APICredential {
			cred := &iamv1alpha1.APICredential{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cred)).To(Succeed())
			return cred
		}
	}
	readyReasonOf := func(ctx context.Context, name string) func(Gomega) string {
		return func(g Gomega) string { return readyReason(get(ctx, name)(g)) }
	}
	create := func(ctx context.Context, name string, apis ...iamv1alpha1.APIGrant) *iamv1alpha1.APICredential {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: apis},
		}
		ExpectWithOffset(1, k8sClient.Create(ctx, cred)).To(Succeed())
		return cred
	}
	secretOf := func(ctx context.Context, name string) *corev1.Secret {
		s := &corev1.Secret{}
		ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
		return s
	}

	It("reports credentials by state and counts issues in Prometheus metrics", func(ctx context.Context) {
		issuedBefore := metricValue("keysmith_credentials_issued_total", nil)
		create(ctx, "counted", grant("platform-api", "user"))
		paused := create(ctx, "paused", grant("platform-api", "user"))
		create(ctx, "broken", grant("platform-api", "owner"))
		Eventually(readyReasonOf(ctx, "counted")).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonIssued))
		Eventually(readyReasonOf(ctx, "paused")).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonIssued))
		Eventually(readyReasonOf(ctx, "broken")).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonInvalidSpec))
		// The counter moves once the status write returns, after the Ready condition can be seen.
		issuedSince := func() float64 { return metricValue("keysmith_credentials_issued_total", nil) - issuedBefore }
		Eventually(issuedSince).Should(Equal(2.0))
		Consistently(issuedSince).WithTimeout(time.Second).Should(Equal(2.0))

		patch := client.MergeFrom(paused.DeepCopy())
		paused.Spec.Active = ptr.To(false)
		Expect(k8sClient.Patch(ctx, paused, patch)).To(Succeed())
		Eventually(func() map[string]float64 {
			out := map[string]float64{}
			for _, s := range []string{StateActive, StateInactive, StateInvalid, StateExpired} {
				out[s] = metricValue("keysmith_credentials", map[string]string{"state": s})
			}
			return out
		}).Should(Equal(map[string]float64{StateActive: 1, StateInactive: 1, StateInvalid: 1, StateExpired: 0}))
	})

	It("issues an applied credential within seconds and sees its Secret deleted", func(ctx context.Context) {
		start := time.Now()
		create(ctx, "applied", grant("platform-api", "user"))
		Eventually(readyReasonOf(ctx, "applied")).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonIssued))
		GinkgoWriter.Printf("credential Ready after %s\n", time.Since(start))
		secret := secretOf(ctx, "applied")
		plain := string(secret.Data[iamv1alpha1.DefaultClientSecretKey])
		Expect(credential.Verify(plain, get(ctx, "applied")(Default).Status.SecretHash)).To(BeTrue())

		By("emitting events through the API server, never with the secret")
		var evs eventsv1.EventList
		Eventually(func(g Gomega) []string {
			g.Expect(k8sClient.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
			var reasons []string
			for _, e := range evs.Items {
				g.Expect(e.Note).NotTo(ContainSubstring(plain))
				reasons = append(reasons, e.Reason)
			}
			return reasons
		}).Should(ContainElement(iamv1alpha1.ReasonIssued))

		By("watching the owned Secret")
		Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
		Eventually(readyReasonOf(ctx, "applied")).Should(Equal(iamv1alpha1.ReasonSecretMissing))
		Consistently(func() bool {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{}) == nil
		}).WithTimeout(2*time.Second).Should(BeFalse(), "no secret is invented")
	})

	It("writes nothing under repeated edits and across manager restarts", func(ctx context.Context) {
		create(ctx, "stable", grant("platform-api", "admin"))
		Eventually(readyReasonOf(ctx, "stable")).Should(Equal(iamv1alpha1.ReasonIssued))
		secretRV := secretOf(ctx, "stable").ResourceVersion
		issued := get(ctx, "stable")(Default)

		for i := range 5 {
			Eventually(func(g Gomega) {
				cred := get(ctx, "stable")(g)
				cred.Spec.DisplayName = "Stable " + string(rune('A'+i))
				g.Expect(k8sClient.Update(ctx, cred)).To(Succeed()) // the manager may be writing status
			}).Should(Succeed())
		}
		Eventually(func(g Gomega) {
			cred := get(ctx, "stable")(g)
			g.Expect(cred.Status.ObservedGeneration).To(Equal(cred.Generation))
		}).Should(Succeed())
		credRV := get(ctx, "stable")(Default).ResourceVersion

		for range 2 {
			stop()
			before := reconcileCount()
			stop = startManager(ctx, ns)
			Eventually(reconcileCount).Should(BeNumerically(">", before), "the new manager reconciled the credential")
		}
		Consistently(func(g Gomega) {
			cred := get(ctx, "stable")(g)
			g.Expect(cred.ResourceVersion).To(Equal(credRV))
			g.Expect(cred.Status.SecretHash).To(Equal(issued.Status.SecretHash))
			g.Expect(secretOf(ctx, "stable").ResourceVersion).To(Equal(secretRV))
		}).WithTimeout(2 * time.Second).Should(Succeed())
	})

	It("reacts to catalog changes without touching the credential", func(ctx context.Context) {
		def := &iamv1alpha1.APIDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: "reports-api-" + ns},
			Spec: iamv1alpha1.APIDefinitionSpec{
				DisplayName: "Reports API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
				Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET"}}},
			},
		}
		Expect(k8sClient.Create(ctx, def)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, def)).To(Succeed()) })

		create(ctx, "reporter", grant(def.Name, "export"))
		Eventually(readyReasonOf(ctx, "reporter")).Should(Equal(iamv1alpha1.ReasonInvalidSpec))

		def.Spec.Permissions = append(def.Spec.Permissions, iamv1alpha1.Permission{Name: "export", Methods: []string{"GET", "POST"}})
		Expect(k8sClient.Update(ctx, def)).To(Succeed())
		Eventually(readyReasonOf(ctx, "reporter")).Should(Equal(iamv1alpha1.ReasonIssued))
	})

	It("follows the namespace's account label", func(ctx context.Context) {
		create(ctx, "accounted", grant("platform-api", "user"))
		Eventually(func(g Gomega) string { return get(ctx, "accounted")(g).Status.Account }).Should(Equal(ns))

		nsObj := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj)).To(Succeed())
		nsObj.Labels[iamv1alpha1.AccountLabel] = "acme"
		Expect(k8sClient.Update(ctx, nsObj)).To(Succeed())
		Eventually(func(g Gomega) string { return get(ctx, "accounted")(g).Status.Account }).Should(Equal("acme"))
	})

	It("comes back by itself when the credential expires", func(ctx context.Context) {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "short-lived"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:      []iamv1alpha1.APIGrant{grant("platform-api", "user")},
				ExpiresAt: ptr.To(metav1.NewTime(time.Now().Add(3 * time.Second).Truncate(time.Second))),
			},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Eventually(readyReasonOf(ctx, "short-lived")).Should(Equal(iamv1alpha1.ReasonIssued))
		Eventually(readyReasonOf(ctx, "short-lived")).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonExpired))
	})
})
