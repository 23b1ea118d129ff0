package controllers

import (
	"context"
	"errors"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// The manager's cache keeps only the cluster-wide keys of the client-ID and API-name
// indexes (clusterWideIndexes), and only the hash of a credential Secret's client secret
// (trimCredentialSecret). These specs run it against the API server.
var _ = Describe("The manager's lean cache", func() {
	It("answers cluster-wide index lookups, and refuses namespaced ones instead of answering nothing", func(ctx context.Context) {
		nsA, nsB := newNamespace(ctx, nil), newNamespace(ctx, nil)
		idA, idB := mustClientIDG(), mustClientIDG()
		api := "lean-index-api-" + nsA
		for _, c := range []struct{ ns, id string }{{nsA, idA}, {nsB, idB}} {
			cred := &iamv1alpha1.APICredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "indexed"},
				Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant(api, "user")}},
			}
			Expect(k8sClient.Create(ctx, cred)).To(Succeed())
			cred.Status.ClientID = c.id
			Expect(k8sClient.Status().Update(ctx, cred)).To(Succeed())
		}

		// A manager caching every namespace, as cmd/manager runs (the specs' managers
		// cache one namespace each, through controller-runtime's multi-namespace cache).
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
			Cache: CacheOptions(), Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(indexCredentials(ctx, mgr.GetFieldIndexer())).To(Succeed())
		stopMgr := testenv.Start(ctx, mgr)
		DeferCleanup(func() { Expect(stopMgr()).To(Succeed()) })
		Expect(mgr.GetCache().WaitForCacheSync(ctx)).To(BeTrue())
		c := mgr.GetClient()

		By("finding the holder of a client ID across namespaces")
		Eventually(func(g Gomega) []string {
			var list iamv1alpha1.APICredentialList
			g.Expect(c.List(ctx, &list, client.MatchingFields{iamv1alpha1.ClientIDField: idB})).To(Succeed())
			var where []string
			for _, item := range list.Items {
				where = append(where, item.Namespace)
			}
			return where
		}).Should(Equal([]string{nsB}))
		held, err := clientIDHeldElsewhere(ctx, c, &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "indexed"}}, idB)
		Expect(err).NotTo(HaveOccurred())
		Expect(held).To(BeTrue(), "the client ID of the credential in another namespace is held elsewhere")
		var granting iamv1alpha1.APICredentialList
		Expect(c.List(ctx, &granting, client.MatchingFields{apiNameIndex: api})).To(Succeed())
		Expect(granting.Items).To(HaveLen(2))

		By("refusing the same lookups in one namespace")
		for _, field := range []client.MatchingFields{{iamv1alpha1.ClientIDField: idA}, {apiNameIndex: api}} {
			var list iamv1alpha1.APICredentialList
			err := c.List(ctx, &list, client.InNamespace(nsA), field)
			Expect(errors.Is(err, errNamespacedLookup)).To(BeTrue(), "a namespaced lookup of %v: %v, %d items", field, err, len(list.Items))
		}

		By("holding no namespaced key in the informer's indexes")
		inf, err := mgr.GetCache().GetInformer(ctx, &iamv1alpha1.APICredential{})
		Expect(err).NotTo(HaveOccurred())
		indexer := inf.(toolscache.SharedIndexInformer).GetIndexer()
		for name := range clusterWideIndexes {
			values := indexer.ListIndexFuncValues(name)
			Expect(values).To(ContainElement(Or(Equal(allNamespacesKey+idA), Equal(allNamespacesKey+api))))
			for _, v := range values {
				Expect(strings.HasPrefix(v, allNamespacesKey)).To(BeTrue(), "index %s holds %q", name, v)
			}
		}
	})

	It("cannot be handed cached facts by a tenant: the API server refuses a generateName that holds the marker", func(ctx context.Context) {
		// trimmed() takes a Secret whose generateName starts with cachedFactsMarker for the
		// cache's own copy, and the facts in it can decide that nothing is to be done. A
		// tenant who writes the Secrets of a namespace must not be able to set one.
		ns := newNamespace(ctx, nil)
		facts := cachedFactsMarker + "\x01x"
		planted := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "planted", GenerateName: facts,
			Labels: map[string]string{iamv1alpha1.CredentialLabel: "planted"}}}
		err := k8sClient.Create(ctx, planted)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "create with generateName %q: %v", facts, err)

		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "later",
			Labels: map[string]string{iamv1alpha1.CredentialLabel: "later"}}}
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		s.GenerateName = facts
		err = k8sClient.Update(ctx, s)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "update to generateName %q: %v", facts, err)
	})

	It("decides nothing to do from the cache's copy of an issued credential's Secret, with no live read, after a restart", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "at-rest"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
		}
		stopFirst := startManager(ctx, ns)
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			return readyReason(cred)
		}).Should(Equal(iamv1alpha1.ReasonIssued))
		stopFirst()

		By("restarting: the new manager's cache lists the Secret, the credential is reconciled once")
		reconcilesBefore := reconcileCount()
		_, _, reads := startCountingManager(ctx, ns)
		Eventually(reconcileCount).Should(BeNumerically(">", reconcilesBefore))
		Eventually(func() float64 {
			return metricValue("workqueue_depth", map[string]string{"name": "apicredential"}) +
				metricValue("controller_runtime_active_workers", map[string]string{"controller": "apicredential"})
		}).Should(BeZero())
		Expect(reads.total()).To(BeZero(), "no live read: the cache's copy said nothing to do (%v)", reads.snapshot())
	})

	Describe("with the manager running", func() {
		var ns string
		BeforeEach(func(ctx context.Context) {
			ns = newNamespace(ctx, nil)
			stop := startManager(ctx, ns)
			DeferCleanup(func() { stop() })
		})
		credOf := func(ctx context.Context, name string) func(Gomega) *iamv1alpha1.APICredential {
			return func(g Gomega) *iamv1alpha1.APICredential {
				cred := &iamv1alpha1.APICredential{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cred)).To(Succeed())
				return cred
			}
		}
		secretOf := func(ctx context.Context, g Gomega, name string) *corev1.Secret {
			s := &corev1.Secret{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
			return s
		}
		overwrite := func(ctx context.Context, name string, value []byte) {
			Eventually(func(g Gomega) {
				s := secretOf(ctx, g, name)
				s.Data[iamv1alpha1.DefaultClientSecretKey] = value
				g.Expect(k8sClient.Update(ctx, s)).To(Succeed())
			}).Should(Succeed())
		}

		It("notices a tenant's new secret value, reports it, rewrites nothing, and is Issued again once it is put back", func(ctx context.Context) {
			Expect(k8sClient.Create(ctx, &iamv1alpha1.APICredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "overwritten"},
				Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
			})).To(Succeed())
			Eventually(func(g Gomega) string { return readyReason(credOf(ctx, "overwritten")(g)) }).Should(Equal(iamv1alpha1.ReasonIssued))
			issued := credOf(ctx, "overwritten")(Default)
			original := secretOf(ctx, Default, "overwritten").Data[iamv1alpha1.DefaultClientSecretKey]
			Expect(credential.Verify(string(original), issued.Status.SecretHash)).To(BeTrue())

			for _, value := range [][]byte{[]byte(mustSecretG()), []byte("hunter2"), []byte(issued.Status.SecretHash)} {
				By("overwriting the client secret with " + map[bool]string{true: "a well-formed secret", false: "something else"}[credential.ParseSecret(string(value)) == nil])
				overwrite(ctx, "overwritten", value)
				Eventually(func(g Gomega) string { return readyReason(credOf(ctx, "overwritten")(g)) }).Should(Equal(iamv1alpha1.ReasonSecretModified))
				Consistently(func(g Gomega) {
					g.Expect(secretOf(ctx, g, "overwritten").Data[iamv1alpha1.DefaultClientSecretKey]).To(Equal(value), "never rewritten")
					g.Expect(credOf(ctx, "overwritten")(g).Status.SecretHash).To(Equal(issued.Status.SecretHash), "status keeps the issued hash")
				}).WithTimeout(time.Second).Should(Succeed())

				By("putting the issued secret back")
				overwrite(ctx, "overwritten", original)
				Eventually(func(g Gomega) string { return readyReason(credOf(ctx, "overwritten")(g)) }).Should(Equal(iamv1alpha1.ReasonIssued))
			}
		})
	})
})
