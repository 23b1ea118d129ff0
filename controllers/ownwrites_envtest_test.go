package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// createHook runs before for each Secret Create the reconciler sends.
type createHook struct {
	client.Client
	before func(ctx context.Context, s *corev1.Secret)
}

func (h *createHook) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if s, ok := obj.(*corev1.Secret); ok && h.before != nil {
		h.before(ctx, s)
	}
	return h.Client.Create(ctx, obj, opts...)
}

// heldBackFor is how many events ownWrites holds back for key.
func (o *ownWrites) heldBackFor(key client.ObjectKey) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if w := o.writes[key]; w != nil {
		return len(w.heldBack)
	}
	return 0
}

var _ = Describe("ownWrites under a running manager (security review of 4529568)", func() {
	It("TestOwnWritesTenantChangeDuringOtherCredentialsCreateUnderManager: a tenant's change to a credential's Secret while another credential naming it creates it is noticed", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		var hook *createHook
		r, _, stop := startManagerSetup(ctx, ns, managerSetup{client: func(c client.Client) client.Client {
			hook = &createHook{Client: c}
			return hook
		}})
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })
		fetch := func(name string) *iamv1alpha1.APICredential {
			c := &iamv1alpha1.APICredential{}
			ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c)).To(Succeed())
			return c
		}
		spec := iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}}

		By("issuing credential a, whose Secret is a")
		Expect(k8sClient.Create(ctx, &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"}, Spec: spec})).To(Succeed())
		Eventually(func() string { return readyReason(fetch("a")) }).Should(Equal(iamv1alpha1.ReasonIssued))
		key := client.ObjectKey{Namespace: ns, Name: "a"}

		By("the tenant takes the credential label off Secret a, so that no cache holds it")
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, key, s)).To(Succeed())
		delete(s.Labels, iamv1alpha1.CredentialLabel)
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(hook.Client.Get(ctx, key, &corev1.Secret{}))
		}).Should(BeTrue(), "the manager's cache no longer holds it")

		By("while credential b (secretTemplate.name a) sends its Create of Secret a, the tenant puts the label back and replaces a's client secret")
		tampered := make(chan struct{})
		hook.before = func(ctx context.Context, created *corev1.Secret) {
			defer GinkgoRecover()
			if ref := metav1.GetControllerOf(created); created.Name != "a" || ref == nil || ref.Name != "b" {
				return
			}
			select {
			case <-tampered:
				return // once
			default:
			}
			live := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, key, live)).To(Succeed())
			live.Labels[iamv1alpha1.CredentialLabel] = "a"
			for k := range live.Data {
				if k == iamv1alpha1.DefaultClientSecretKey {
					live.Data[k] = []byte("chosen-by-the-tenant")
				}
			}
			Expect(k8sClient.Update(ctx, live)).To(Succeed())
			Eventually(func() int { return r.echoes.heldBackFor(key) }).Should(BeNumerically(">", 0), "the tenant's write is held back")
			close(tampered)
		}
		bSpec := spec.DeepCopy()
		bSpec.SecretTemplate.Name = "a"
		Expect(k8sClient.Create(ctx, &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"}, Spec: *bSpec})).To(Succeed())
		Eventually(tampered).Should(BeClosed())
		Eventually(func() string { return readyReason(fetch("b")) }).Should(Equal(iamv1alpha1.ReasonSecretConflict))

		By("credential a notices that its Secret was changed")
		Eventually(func() string { return readyReason(fetch("a")) }).Should(Equal(iamv1alpha1.ReasonSecretModified))
	})
})
