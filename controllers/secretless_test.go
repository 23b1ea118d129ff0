package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// Issue 13 item 5: spec.issueSecret: false issues a client ID, no secret and no Secret.
var _ = Describe("APICredential without a secret (spec.issueSecret: false)", func() {
	var h *harness

	BeforeEach(func(ctx context.Context) {
		h = newHarness(ctx, nil)
	})

	It("issues a client ID and no secret and no Secret, Ready Issued, and keeps the client ID", func() {
		cred := h.credential("wi", grant("platform-api", "user"))
		cred.Spec.IssueSecret = ptr.To(false)
		cred.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
		h.create(cred)
		h.mustReconcile(cred)

		got := h.fetch("wi")
		Expect(credential.ValidClientID(got.Status.ClientID)).To(BeTrue(), "status.clientID %q", got.Status.ClientID)
		Expect(got.Status.SecretHash).To(BeEmpty())
		Expect(got.Status.SecretRef).To(BeNil())
		Expect(h.secret(secretName(got))).To(BeNil(), "no Secret is written")
		Expect(ready(got).Status).To(Equal(metav1.ConditionTrue))
		Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonIssued))
		Expect(ready(got).Message).To(ContainSubstring("no secret"))
		Expect(condition(got, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionTrue))

		h.mustReconcile(got)
		again := h.fetch("wi")
		Expect(again.Status.ClientID).To(Equal(got.Status.ClientID), "a second reconcile mints no other client ID")
		Expect(again.Status.SecretHash).To(BeEmpty())
		Expect(h.secret(secretName(again))).To(BeNil())

		h.update("wi", func(c *iamv1alpha1.APICredential) { c.Spec.Active = ptr.To(false) })
		h.mustReconcile(again)
		Expect(condition(h.fetch("wi"), iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionFalse))
	})

	It("mints no client ID from a cache behind the API server", func() {
		cred := h.credential("wi-stale", grant("platform-api", "user"))
		cred.Spec.IssueSecret = ptr.To(false)
		cred.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
		h.create(cred)
		stale := cred.DeepCopy()
		h.mustReconcile(cred)
		issued := h.fetch("wi-stale")
		Expect(issued.Status.ClientID).NotTo(BeEmpty())

		// The resourceVersion the stale copy carries is behind the live one.
		Expect(h.r.reconcileSecretless(h.ctx, stale, h.clock.Now(), &outcome{})).To(MatchError(errCacheBehind))
		Expect(stale.Status.ClientID).To(BeEmpty())
		Expect(h.fetch("wi-stale").Status.ClientID).To(Equal(issued.Status.ClientID))
	})
})
