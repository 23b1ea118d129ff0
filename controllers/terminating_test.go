package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// A credential held in deletion (a finalizer, a foreground deletion, a GitOps prune) is
// refused by token servers (internal/tokenserver: Credential.Terminating); its Active
// condition must say so, through the real manager: its cache, its trimmed copies and the
// predicates that decide what wakes it.
var _ = Describe("An APICredential being deleted", func() {
	It("reports Active False (Terminating) once, keeps the rest of status, and writes nothing more", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		stop := startManager(ctx, ns)
		DeferCleanup(func() { stop() })
		const hold = "example.com/hold"
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leaving", Finalizers: []string{hold}},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			latest := &iamv1alpha1.APICredential{}
			if k8sClient.Get(ctx, keyOf(cred), latest) == nil {
				latest.Finalizers = nil
				_ = k8sClient.Update(ctx, latest)
			}
		})
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			return activeReason(cred)
		}).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonIssued))
		issued := cred.DeepCopy()
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName(cred)}, secret)).To(Succeed())

		Expect(k8sClient.Delete(ctx, cred, client.PropagationPolicy(metav1.DeletePropagationForeground))).To(Succeed())
		var deleting iamv1alpha1.APICredential
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), &deleting)).To(Succeed())
			return activeReason(&deleting)
		}).WithTimeout(10*time.Second).Should(Equal(iamv1alpha1.ReasonTerminating), "status must not say token servers accept it")
		active := condition(&deleting, iamv1alpha1.ConditionActive)
		Expect(active.Status).To(Equal(metav1.ConditionFalse))
		Expect(active.ObservedGeneration).To(Equal(deleting.Generation))
		Expect(deleting.Generation).To(BeNumerically(">", issued.Generation), "the deletion moved the generation: that is what woke the manager")
		Expect(ready(&deleting).Reason).To(Equal(iamv1alpha1.ReasonIssued), "Ready is left as it was")
		Expect(deleting.Status.SecretHash).To(Equal(issued.Status.SecretHash))
		Expect(deleting.Status.ClientID).To(Equal(issued.Status.ClientID))

		By("writing nothing more while it is held")
		rv := deleting.ResourceVersion
		Consistently(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), &deleting)).To(Succeed())
			return deleting.ResourceVersion
		}).WithTimeout(2 * time.Second).Should(Equal(rv))
		after := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), after)).To(Succeed())
		Expect(after.ResourceVersion).To(Equal(secret.ResourceVersion), "the Secret is left to the garbage collector")
	})
})

var _ = Describe("Marking a credential that is being deleted", func() {
	It("looks again shortly, without an error, when its copy lost the optimistic lock", func(ctx context.Context) {
		h := newHarness(ctx, nil)
		cred := h.credential("leaving-stale", grant("platform-api", "user"))
		cred.Finalizers = []string{"example.com/hold", "example.com/second"}
		h.create(cred)
		DeferCleanup(func(ctx context.Context) {
			h.update("leaving-stale", func(c *iamv1alpha1.APICredential) { c.Finalizers = nil })
		})
		h.mustReconcile(cred)
		Expect(k8sClient.Delete(ctx, h.fetch("leaving-stale"))).To(Succeed())
		stale := h.fetch("leaving-stale")
		// Someone else's write in between: the finalizers change, as when the garbage
		// collector removes foregroundDeletion.
		h.update("leaving-stale", func(c *iamv1alpha1.APICredential) { c.Finalizers = []string{"example.com/hold"} })

		res, err := h.r.markTerminating(ctx, stale)
		Expect(err).NotTo(HaveOccurred(), "a lost lock is not an error")
		Expect(res.RequeueAfter).To(Equal(time.Second))
		Expect(activeReason(h.fetch("leaving-stale"))).To(Equal(iamv1alpha1.ReasonIssued), "nothing was written from the stale copy")

		h.mustReconcile(stale)
		Expect(activeReason(h.fetch("leaving-stale"))).To(Equal(iamv1alpha1.ReasonTerminating))
	})
})

// TestCredentialStateTerminating: the gauge counts a credential being deleted as
// terminating, not as the active one its Ready condition still describes.
func TestCredentialStateTerminating(t *testing.T) {
	cred := &iamv1alpha1.APICredential{Status: iamv1alpha1.APICredentialStatus{Conditions: []metav1.Condition{
		{Type: iamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued},
	}}}
	if got := credentialState(cred); got != StateActive {
		t.Fatalf("an issued credential: %q, want %q", got, StateActive)
	}
	cred.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	if got := credentialState(cred); got != StateTerminating {
		t.Errorf("an issued credential being deleted: %q, want %q", got, StateTerminating)
	}
}
