package controllers

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// racingStatusClient makes the reconciler's next status patch lose the optimistic lock:
// just before it, the credential is written by someone else through k8sClient — a token
// server's usage write, or another change.
type racingStatusClient struct {
	client.Client
	race func(ctx context.Context, key client.ObjectKey)
}

func (c *racingStatusClient) Status() client.SubResourceWriter {
	return racingStatusWriter{SubResourceWriter: c.Client.Status(), c: c}
}

type racingStatusWriter struct {
	client.SubResourceWriter
	c *racingStatusClient
}

func (w racingStatusWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if race := w.c.race; race != nil {
		w.c.race = nil
		race(ctx, client.ObjectKeyFromObject(obj))
	}
	return w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// usageWrite records a use of the credential as a token server does: a status patch of
// the usage fields only.
func usageWrite(address string) func(ctx context.Context, key client.ObjectKey) {
	return func(ctx context.Context, key client.ObjectKey) {
		GinkgoHelper()
		cred := &iamv1alpha1.APICredential{}
		Expect(k8sClient.Get(ctx, key, cred)).To(Succeed())
		base := cred.DeepCopy()
		cred.Status.LastUsedTime = &metav1.Time{Time: metav1.Now().Rfc3339Copy().Time}
		cred.Status.LastUsedAddress = address
		Expect(k8sClient.Status().Patch(ctx, cred, client.MergeFrom(base))).To(Succeed())
	}
}

func countReason(events []string, reason string) int {
	n := 0
	for _, e := range events {
		if strings.Contains(e, " "+reason+" ") {
			n++
		}
	}
	return n
}

var _ = Describe("A status write that races a token server's usage write", func() {
	var (
		h      *harness
		racing *racingStatusClient
	)
	BeforeEach(func(ctx context.Context) {
		h = newHarness(ctx, nil)
		racing = &racingStatusClient{Client: k8sClient}
		h.r = h.reconcilerWith(racing)
	})

	expectRecorded := func(name string, address string) *iamv1alpha1.APICredential {
		GinkgoHelper()
		cred := h.fetch(name)
		secret := h.secret(secretName(cred))
		Expect(secret).NotTo(BeNil())
		Expect(credential.Hash(string(secret.Data[iamv1alpha1.DefaultClientSecretKey]))).To(Equal(cred.Status.SecretHash),
			"status records the secret the Secret holds")
		Expect(cred.Status.LastUsedAddress).To(Equal(address), "the token server's usage write is kept")
		Expect(ready(cred).Status).To(Equal(metav1.ConditionTrue))
		return cred
	}

	It("records an issue in the same reconcile, announced as Issued, never as an adoption", func() {
		cred := h.create(h.credential("racing-issue", grant("platform-api", "admin")))
		racing.race = usageWrite("203.0.113.7")
		h.mustReconcile(cred)
		Expect(racing.race).To(BeNil(), "the race ran")
		expectRecorded("racing-issue", "203.0.113.7")
		evs := h.events()
		Expect(countReason(evs, iamv1alpha1.ReasonIssued)).To(Equal(1), "%v", evs)
		Expect(countReason(evs, "Adopted")).To(Equal(0), "%v", evs)

		By("a second reconcile having nothing to do")
		h.mustReconcile(cred)
		Expect(countReason(h.events(), "Adopted")).To(Equal(0))
	})

	It("records a rotation in the same reconcile, announced as Rotated", func() {
		cred := h.create(h.credential("racing-rotate", grant("platform-api", "admin")))
		h.mustReconcile(cred)
		first := h.fetch("racing-rotate").Status.SecretHash
		h.events()
		h.update("racing-rotate", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
		racing.race = usageWrite("198.51.100.9")
		h.mustReconcile(cred)
		rotated := expectRecorded("racing-rotate", "198.51.100.9")
		Expect(rotated.Status.KeyVersion).To(Equal(int64(1)))
		Expect(rotated.Status.PreviousSecrets).To(HaveLen(1))
		Expect(rotated.Status.PreviousSecrets[0].Hash).To(Equal(first))
		evs := h.events()
		Expect(countReason(evs, "Rotated")).To(Equal(1), "%v", evs)
		Expect(countReason(evs, "Adopted")).To(Equal(0), "%v", evs)
	})

	It("records a rotation that races a token server's revocation write, keeping status.revokedTokens", func() {
		cred := h.create(h.credential("racing-revoke", grant("platform-api", "admin")))
		h.mustReconcile(cred)
		h.events()
		h.update("racing-revoke", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
		revoked := []iamv1alpha1.RevokedToken{{JTI: "whJvKtS32lN9KW8ZpVI16w", Exp: metav1.NewTime(metav1.Now().Add(time.Hour).Truncate(time.Second))}}
		racing.race = func(ctx context.Context, key client.ObjectKey) {
			GinkgoHelper()
			c := &iamv1alpha1.APICredential{}
			Expect(k8sClient.Get(ctx, key, c)).To(Succeed())
			base := c.DeepCopy()
			c.Status.RevokedTokens = revoked
			Expect(k8sClient.Status().Patch(ctx, c, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))).To(Succeed())
		}
		h.mustReconcile(cred)
		Expect(racing.race).To(BeNil(), "the race ran")
		rotated := h.fetch("racing-revoke")
		Expect(rotated.Status.KeyVersion).To(Equal(int64(1)), "the rotation is recorded in the same reconcile")
		Expect(rotated.Status.RevokedTokens).To(HaveLen(1))
		Expect(rotated.Status.RevokedTokens[0].JTI).To(Equal(revoked[0].JTI), "the token server's revocations are kept")
		Expect(countReason(h.events(), "Rotated")).To(Equal(1))

		By("a later status write from a copy taken before the revocation keeps them too")
		h.update("racing-revoke", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 2 })
		h.mustReconcile(cred)
		Expect(h.fetch("racing-revoke").Status.RevokedTokens).To(HaveLen(1))
	})

	It("does not write over any other change: the reconcile fails and the next one decides again", func() {
		cred := h.create(h.credential("racing-spec", grant("platform-api", "admin")))
		racing.race = func(ctx context.Context, key client.ObjectKey) {
			h.update(key.Name, func(c *iamv1alpha1.APICredential) { c.Spec.DisplayName = "Renamed meanwhile" })
		}
		_, err := h.reconcile(cred)
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "%v", err)
		Expect(h.fetch("racing-spec").Status.SecretHash).To(BeEmpty(), "nothing recorded over a change it did not see")
		Expect(countReason(h.events(), iamv1alpha1.ReasonIssued)).To(Equal(0), "nothing announced that status does not record")

		By("the next reconcile recording the Secret already written, minting nothing")
		secretBefore := h.secret("racing-spec")
		Expect(secretBefore).NotTo(BeNil())
		h.mustReconcile(cred)
		after := expectRecorded("racing-spec", "")
		Expect(h.secret("racing-spec").Data).To(Equal(secretBefore.Data))
		Expect(after.Status.SecretHash).To(Equal(credential.Hash(string(secretBefore.Data[iamv1alpha1.DefaultClientSecretKey]))))
	})
})
