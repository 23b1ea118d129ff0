package controllers

import (
	"context"
	"encoding/json"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

var _ = Describe("Signing keys", func() {
	const name = "keysmith-signing-keys"
	policy := signingkey.Policy{RotationPeriod: 720 * time.Hour, PrePublish: time.Hour, Retention: 24 * time.Hour}
	var (
		ns    string
		clock *clocktesting.FakeClock
		r     *SigningKeyReconciler
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
		clock = clocktesting.NewFakeClock(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		r = &SigningKeyReconciler{Client: mgr.GetClient(), Clock: clock, Namespace: ns, Name: name, Policy: policy}
		Expect(r.SetupWithManager(mgr)).To(Succeed())
		stop := testenv.Start(ctx, mgr)
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })
	})

	secret := func(ctx context.Context) func(Gomega) *corev1.Secret {
		return func(g Gomega) *corev1.Secret {
			s := &corev1.Secret{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
			return s
		}
	}
	keysOf := func(s *corev1.Secret) *signingkey.Set {
		set, err := signingkey.Parse(s.Data[signingkey.DataKey])
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return set
	}
	// reconcile runs the reconciler directly, beside the manager's own runs; a conflict
	// with one of those is retried, as the workqueue would.
	reconcile := func(ctx context.Context) ctrl.Result {
		var res ctrl.Result
		EventuallyWithOffset(1, func() error {
			var err error
			res, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}})
			return err
		}).Should(Succeed())
		return res
	}

	It("creates the Secret at start, rotates ahead of the period and prunes after retention", func(ctx context.Context) {
		Eventually(secret(ctx)).Should(Not(BeNil()))
		s := secret(ctx)(Default)
		Expect(s.Labels).To(HaveKeyWithValue(SigningKeyLabel, "true"))
		Expect(s.Annotations).To(HaveKeyWithValue(signingkey.RetentionAnnotation, "24h0m0s"), "token servers compare their token lifetime with it")
		first := keysOf(s)
		Expect(first.Keys).To(HaveLen(1))

		By("publishing the public keys, and only those, for verify-only token servers")
		publicKids := func(g Gomega) []string {
			cm := &corev1.ConfigMap{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: signingkey.PublicName(name)}, cm)).To(Succeed())
			jwks := cm.Data[signingkey.PublicDataKey]
			g.Expect(jwks).NotTo(ContainSubstring(`"d"`))
			var set struct {
				Keys []struct {
					Kid string `json:"kid"`
				} `json:"keys"`
			}
			g.Expect(json.Unmarshal([]byte(jwks), &set)).To(Succeed())
			var kids []string
			for _, k := range set.Keys {
				kids = append(kids, k.Kid)
			}
			return kids
		}
		Eventually(publicKids).Should(Equal([]string{first.Keys[0].ID}))

		By("writing nothing while nothing is due")
		res := reconcile(ctx)
		Expect(res.RequeueAfter).To(Equal(719 * time.Hour))
		Consistently(func(g Gomega) string { return secret(ctx)(g).ResourceVersion }).
			WithTimeout(500 * time.Millisecond).Should(Equal(s.ResourceVersion))

		By("pre-publishing a successor an hour before the period ends")
		clock.Step(719 * time.Hour)
		reconcile(ctx)
		Eventually(func(g Gomega) int { return len(keysOf(secret(ctx)(g)).Keys) }).Should(Equal(2))
		set := keysOf(secret(ctx)(Default))
		Expect(set.Keys[0].ID).To(Equal(first.Keys[0].ID), "the old key stays")
		Eventually(publicKids).Should(Equal([]string{set.Keys[0].ID, set.Keys[1].ID}), "the successor is published before it signs")
		signing, _ := set.Signing(clock.Now())
		Expect(signing.ID).To(Equal(first.Keys[0].ID), "the old key signs until the successor activates")

		By("pruning the old key once its retention has passed")
		clock.Step(time.Hour + policy.Retention)
		reconcile(ctx)
		Eventually(func(g Gomega) []string {
			var ids []string
			for _, k := range keysOf(secret(ctx)(g)).Keys {
				ids = append(ids, k.ID)
			}
			return ids
		}).Should(Equal([]string{set.Keys[1].ID}))
	})

	It("re-creates a deleted Secret at once and leaves an unreadable one alone", func(ctx context.Context) {
		Eventually(secret(ctx)).Should(Not(BeNil()))
		s := secret(ctx)(Default)
		Expect(k8sClient.Delete(ctx, s)).To(Succeed())
		Eventually(func(g Gomega) types.UID { return secret(ctx)(g).UID }).WithTimeout(10 * time.Second).
			ShouldNot(Equal(s.UID))

		broken := secret(ctx)(Default)
		broken.Data = map[string][]byte{signingkey.DataKey: []byte(`{"keys":[{"kid":"x","alg":"ES256","privateKey":"garbage"}]}`)}
		Expect(k8sClient.Update(ctx, broken)).To(Succeed())
		reconcile(ctx)
		Consistently(func(g Gomega) string { return secret(ctx)(g).ResourceVersion }).
			WithTimeout(time.Second).Should(Equal(broken.ResourceVersion), "keys it cannot read are never overwritten")
	})
})

// A change of --signing-algorithm is a manager restart with another policy: the Secret
// gets a successor of the new algorithm at once, which signs after the pre-publication,
// the old key stays published, and nothing is rewritten while nothing changes.
var _ = Describe("Signing key algorithms", func() {
	const name = "keysmith-signing-keys"
	var (
		ns    string
		clock *clocktesting.FakeClock
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
		clock = clocktesting.NewFakeClock(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	})
	// start runs a manager whose signing key reconciler has the policy of alg, until the
	// returned stop is called.
	start := func(ctx context.Context, alg string) (*SigningKeyReconciler, func()) {
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		policy := signingkey.Policy{RotationPeriod: 720 * time.Hour, PrePublish: time.Hour, Retention: 24 * time.Hour, Algorithm: alg}
		r := &SigningKeyReconciler{Client: mgr.GetClient(), Clock: clock, Namespace: ns, Name: name, Policy: policy}
		Expect(r.SetupWithManager(mgr)).To(Succeed())
		stop := testenv.Start(ctx, mgr)
		return r, func() { Expect(stop()).To(Succeed()) }
	}
	get := func(ctx context.Context, g Gomega) (*corev1.Secret, *signingkey.Set) {
		s := &corev1.Secret{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
		set, err := signingkey.Parse(s.Data[signingkey.DataKey])
		g.Expect(err).NotTo(HaveOccurred())
		return s, set
	}
	algsOf := func(set *signingkey.Set) []string {
		var algs []string
		for _, k := range set.Keys {
			algs = append(algs, k.Algorithm)
		}
		return algs
	}
	publishedAlgs := func(ctx context.Context) func(Gomega) []string {
		return func(g Gomega) []string {
			cm := &corev1.ConfigMap{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: signingkey.PublicName(name)}, cm)).To(Succeed())
			var set struct {
				Keys []struct {
					Kty string `json:"kty"`
					Alg string `json:"alg"`
					Use string `json:"use"`
				} `json:"keys"`
			}
			g.Expect(json.Unmarshal([]byte(cm.Data[signingkey.PublicDataKey]), &set)).To(Succeed())
			var algs []string
			for _, k := range set.Keys {
				g.Expect(k.Use).To(Equal("sig"))
				g.Expect(k.Kty).To(Equal(map[string]string{"ES256": "EC", "RS256": "RSA", "EdDSA": "OKP"}[k.Alg]))
				algs = append(algs, k.Alg)
			}
			return algs
		}
	}
	// unchanged checks that a reconcile writes nothing: the Secret's resourceVersion
	// stays.
	unchanged := func(ctx context.Context, r *SigningKeyReconciler) {
		s, _ := get(ctx, Default)
		EventuallyWithOffset(1, func() error {
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}})
			return err
		}).Should(Succeed())
		ConsistentlyWithOffset(1, func(g Gomega) string { s2, _ := get(ctx, g); return s2.ResourceVersion }).
			WithTimeout(500 * time.Millisecond).Should(Equal(s.ResourceVersion))
	}

	It("creates the first key with the flag's algorithm", func(ctx context.Context) {
		r, stop := start(ctx, signingkey.RS256)
		defer stop()
		Eventually(func(g Gomega) []string { _, set := get(ctx, g); return algsOf(set) }).Should(Equal([]string{"RS256"}))
		Eventually(publishedAlgs(ctx)).Should(Equal([]string{"RS256"}))
		unchanged(ctx, r)
	})

	It("pre-publishes a successor on each change of algorithm, ES256 to RS256 to EdDSA", func(ctx context.Context) {
		r, stop := start(ctx, "") // the default
		Eventually(func(g Gomega) []string { _, set := get(ctx, g); return algsOf(set) }).Should(Equal([]string{"ES256"}))
		unchanged(ctx, r)
		stop()

		By("restarting with --signing-algorithm=RS256 mid-period")
		clock.Step(100 * time.Hour)
		changedAt := clock.Now()
		r, stop = start(ctx, signingkey.RS256)
		Eventually(func(g Gomega) []string { _, set := get(ctx, g); return algsOf(set) }).Should(Equal([]string{"ES256", "RS256"}))
		Eventually(publishedAlgs(ctx)).Should(Equal([]string{"ES256", "RS256"}), "both are published: the old key for the tokens it signed")
		_, set := get(ctx, Default)
		Expect(set.Keys[1].ActivatesAt).To(BeTemporally("==", changedAt.Add(time.Hour)), "the successor signs after --signing-key-prepublish")
		signing, _ := set.Signing(clock.Now())
		Expect(signing.Algorithm).To(Equal("ES256"), "the ES256 key signs until then")
		unchanged(ctx, r)

		By("activating the RS256 key an hour later, the ES256 key retired but published")
		clock.Step(time.Hour)
		_, set = get(ctx, Default)
		signing, _ = set.Signing(clock.Now())
		Expect(signing.Algorithm).To(Equal("RS256"))
		unchanged(ctx, r)
		stop()

		By("restarting with --signing-algorithm=EdDSA")
		clock.Step(2 * time.Hour)
		r, stop = start(ctx, signingkey.EdDSA)
		defer stop()
		Eventually(func(g Gomega) []string { _, set := get(ctx, g); return algsOf(set) }).Should(Equal([]string{"ES256", "RS256", "EdDSA"}))
		Eventually(publishedAlgs(ctx)).Should(Equal([]string{"ES256", "RS256", "EdDSA"}))
		unchanged(ctx, r)

		By("pruning the ES256 key when its retention ends, then the RS256 key")
		pruned := func(g Gomega) []string {
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}})
			g.Expect(err).NotTo(HaveOccurred())
			_, set := get(ctx, g)
			return algsOf(set)
		}
		clock.Step(24 * time.Hour) // ES256 retired at +101h, RS256 at +105h; now +128h
		Eventually(pruned).Should(Equal([]string{"RS256", "EdDSA"}))
		Eventually(publishedAlgs(ctx)).Should(Equal([]string{"RS256", "EdDSA"}))
		clock.Step(time.Hour)
		Eventually(pruned).Should(Equal([]string{"EdDSA"}))
		Eventually(publishedAlgs(ctx)).Should(Equal([]string{"EdDSA"}))
		unchanged(ctx, r)
	})
})
