package integration

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DESIGN §2 item 7 and docs/security.md: token servers never read credential Secrets, and
// nobody but the manager reads the binding key, under the shipped RBAC.
var _ = Describe("Least privilege of the token servers", func() {
	tokenServerUser := serviceAccount("keysmith-token-server")

	It("never lets a token server read a credential Secret or the binding key", func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		for _, user := range []string{tokenServerUser, sidecarUser} {
			for _, verb := range []string{"get", "list", "watch"} {
				Expect(maySecret(ctx, user, n.Name, verb, "billing-sync")).To(BeFalse(), "%s %s a credential Secret", user, verb)
				Expect(maySecret(ctx, user, systemNamespace, verb, bindingKeySecret)).To(BeFalse(), "%s %s the binding key", user, verb)
			}
		}
		By("the shared token server reads the signing keys it signs with; the verify-only sidecar does not")
		Expect(maySecret(ctx, tokenServerUser, systemNamespace, "get", signingSecret)).To(BeTrue())
		Expect(maySecret(ctx, sidecarUser, systemNamespace, "get", signingSecret)).To(BeFalse())
	})
})
