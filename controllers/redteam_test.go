package controllers

import (
	"context"
	"maps"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
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
