package controllers

import (
	"context"
	"maps"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// Red-team regression specs: attacks on the operator's write-once table by a tenant who
// may write the Secrets of their namespace.
var _ = Describe("red team", func() {
	var h *harness

	BeforeEach(func(ctx context.Context) {
		h = newHarness(ctx, nil)
	})

	// The binding covers the issue time at second precision. A Secret writer who holds a
	// rotated-away Secret (its data and its binding) must not be able to move its issue
	// time forward within that second, keep the binding valid, and have the operator take
	// it for a newer rotation whose status write was lost.
	It("does not adopt a rotated-away Secret written back with a sub-second later issue time", func(ctx context.Context) {
		cred := h.credential("subsecond", grant("platform-api", "user"))
		h.create(cred)
		h.mustReconcile(cred)
		first := h.secret("subsecond").DeepCopy()
		firstStatus := h.fetch("subsecond").Status

		By("rotating within the same second (the clock does not move)")
		h.update("subsecond", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
		h.mustReconcile(cred)
		rotated := h.fetch("subsecond")
		Expect(rotated.Status.SecretHash).NotTo(Equal(firstStatus.SecretHash))
		Expect(rotated.Status.IssuedAt.Time.Equal(firstStatus.IssuedAt.Time)).To(BeTrue(), "both issued in one second")

		By("a Secret writer writing the first Secret back, its issue time half a second later")
		writer := tenantClient(ctx, h.ns, "subsecond-writer-"+h.ns, false)
		writeAs(ctx, writer, client.ObjectKey{Namespace: h.ns, Name: "subsecond"}, func(s *corev1.Secret) {
			s.Data = maps.Clone(first.Data)
			s.Annotations = maps.Clone(first.Annotations)
			s.Annotations[iamv1alpha1.IssuedAtAnnotation] = firstStatus.IssuedAt.Time.UTC().Add(500 * time.Millisecond).Format(time.RFC3339Nano)
		})
		h.mustReconcile(cred)

		after := h.fetch("subsecond")
		Expect(after.Status.SecretHash).To(Equal(rotated.Status.SecretHash), "the rotated-away secret is not current again")
		Expect(after.Status.KeyVersion).To(Equal(int64(1)))
		Expect(ready(after).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
		Expect(h.events()).NotTo(ContainElement(ContainSubstring("Adopted")))
	})
})

// A tenant who writes a Secret named like the binding key, with its label and a key ring
// of their own, in their namespace, and binds a Secret of their choice under that ring,
// gets nothing adopted: the manager reads its binding keys only from the operator's
// namespace, through a cache that holds that one Secret.
var _ = Describe("red team with the manager running", func() {
	It("ignores a binding key Secret a tenant writes into their own namespace", func(ctx context.Context) {
		tenantNS, operatorNS := newNamespace(ctx, nil), newNamespace(ctx, nil)
		tenant := tenantClient(ctx, tenantNS, "decoy-"+tenantNS, true)

		By("the tenant writing a decoy binding key Secret, with the label, into their namespace")
		decoy, err := binding.NewRing(time.Now())
		Expect(err).NotTo(HaveOccurred())
		data, err := decoy.Marshal()
		Expect(err).NotTo(HaveOccurred())
		Expect(tenant.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: bindingKeySecret, Labels: map[string]string{
				BindingKeyLabel: "true", "app.kubernetes.io/managed-by": "keysmith",
			}},
			Data: map[string][]byte{BindingKeyDataKey: data},
		})).To(Succeed())

		By("and a credential Secret holding a client ID and secret of their choice, bound under the decoy ring")
		issuedAt := time.Now().UTC().Truncate(time.Second)
		clientID, chosen := mustClientIDG(), mustSecretG()
		forged := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "forged"}}
		Expect(tenant.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "forged",
				Labels: map[string]string{iamv1alpha1.CredentialLabel: "forged"},
				Annotations: map[string]string{
					iamv1alpha1.KeyVersionAnnotation: "0",
					iamv1alpha1.IssuedAtAnnotation:   issuedAt.Format(time.RFC3339),
					iamv1alpha1.BindingAnnotation:    decoy.Sign(bindingSubject(forged, clientID, credential.Hash(chosen), 0, issuedAt)),
				}},
			Data: map[string][]byte{iamv1alpha1.DefaultClientIDKey: []byte(clientID), iamv1alpha1.DefaultClientSecretKey: []byte(chosen)},
		})).To(Succeed())

		stop := startManagerKeyedIn(ctx, tenantNS, operatorNS)
		DeferCleanup(stop)
		forged.Spec = iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}}
		Expect(tenant.Create(ctx, forged)).To(Succeed())

		Eventually(func(g Gomega) string {
			got := &iamv1alpha1.APICredential{}
			g.Expect(k8sClient.Get(ctx, keyOf(forged), got)).To(Succeed())
			return readyReason(got)
		}).WithTimeout(30*time.Second).Should(Equal(iamv1alpha1.ReasonSecretConflict),
			"the decoy binding does not verify: a Secret the credential does not control is its own only when bound")
		Consistently(func(g Gomega) string {
			got := &iamv1alpha1.APICredential{}
			g.Expect(k8sClient.Get(ctx, keyOf(forged), got)).To(Succeed())
			return got.Status.ClientID + got.Status.SecretHash
		}, 2*time.Second).Should(BeEmpty(), "neither the chosen client ID nor the chosen secret is recorded")

		By("the manager having created its own key in the operator's namespace, and left the decoy alone")
		own := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: bindingKeySecret}, own)).To(Succeed())
		Expect(own.Data[BindingKeyDataKey]).NotTo(Equal(data))
		left := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: tenantNS, Name: bindingKeySecret}, left)).To(Succeed())
		Expect(left.Data[BindingKeyDataKey]).To(Equal(data))
	})
})

// startManagerKeyedIn runs the reconcilers as cmd/manager does, the credentials' cache on
// ns and the binding key in keyNS (the operator's namespace).
func startManagerKeyedIn(ctx context.Context, ns, keyNS string) (stop func()) {
	GinkgoHelper()
	_, _, stopMgr := startManagerSetup(ctx, ns, managerSetup{keyNamespace: keyNS})
	return func() { GinkgoHelper(); Expect(stopMgr()).To(Succeed()) }
}

func mustClientIDG() string {
	id, err := credential.NewClientID()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return id
}
