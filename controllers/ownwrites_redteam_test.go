package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Security review of ownWrites (commit 4529568): the events it holds back while a Secret
// write is in flight must wake the credential the Secret belongs to. Two credentials can
// name one Secret (spec.secretTemplate.name), so the writer is not always that credential.
var _ = Describe("ownWrites: a held-back event of a Secret two credentials name", func() {
	controlled := func(s *corev1.Secret, owner string) *corev1.Secret {
		c := s.DeepCopy()
		c.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential", Name: owner, UID: types.UID("uid-" + owner),
			Controller: ptr.To(true),
		}}
		return c
	}
	names := func(wake chan event.GenericEvent) []string {
		var out []string
		for len(wake) > 0 {
			out = append(out, (<-wake).Object.GetName())
		}
		return out
	}

	It("TestOwnWritesTenantChangeDuringOtherCredentialsCreate: a tenant's change held back during another credential's failed Create wakes the Secret's credential", func(ctx context.Context) {
		b := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}}
		shared := controlled(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", ResourceVersion: "5"}}, "a")
		key := client.ObjectKeyFromObject(shared)
		wake := make(chan event.GenericEvent, 8)
		r := &APICredentialReconciler{}
		r.echoes.wake = wake
		p := r.notOwnEcho()

		// b names a's Secret and does not see it in its cache (the tenant took the
		// credential label off): b's Create is in flight when the tenant writes a's Secret.
		r.echoes.begin(key, b)
		tampered := shared.DeepCopy()
		tampered.ResourceVersion = "6"
		Expect(p.Update(event.UpdateEvent{ObjectOld: shared, ObjectNew: tampered})).To(BeFalse(), "held back while b's write is in flight")
		r.echoes.done(ctx, key, nil, b) // AlreadyExists
		Expect(names(wake)).To(ContainElement("a"), "the tenant's change to a's Secret wakes a")
	})

	It("TestOwnWritesSecondWriterKeepsHeldBackEvents: a write begun while another credential's is in flight does not discard its held-back events", func(ctx context.Context) {
		a := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}
		b := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "shared", ResourceVersion: "5"}}
		key := client.ObjectKeyFromObject(s)
		wake := make(chan event.GenericEvent, 8)
		r := &APICredentialReconciler{}
		r.echoes.wake = wake
		p := r.notOwnEcho()

		r.echoes.begin(key, a) // a's Update of its Secret
		tenant := controlled(s, "a")
		tenant.ResourceVersion = "6"
		Expect(p.Update(event.UpdateEvent{ObjectOld: controlled(s, "a"), ObjectNew: tenant})).To(BeFalse(), "held back while a's write is in flight")
		r.echoes.begin(key, b) // b's Create of the same name, at the same time
		mine := controlled(s, "a")
		mine.ResourceVersion = "7"
		r.echoes.done(ctx, key, mine, a)
		r.echoes.done(ctx, key, nil, b)
		Expect(names(wake)).To(ContainElement("a"), "the tenant's write between a's begin and b's is not lost")
	})
})
