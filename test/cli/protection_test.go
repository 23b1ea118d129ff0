package cli

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("kubectl keysmith delete of a protected credential", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	// expectProtectionRefusal asserts a one-line refusal, exit 1, that explains the two
	// steps: set spec.deletionProtection to false (where), then delete again.
	expectProtectionRefusal := func(r result, where string) {
		ExpectWithOffset(1, r.code).To(Equal(1), "%s", r)
		msg := strings.TrimRight(r.stderr, "\n")
		ExpectWithOffset(1, msg).To(HavePrefix("error: "), "%s", r)
		ExpectWithOffset(1, msg).NotTo(ContainSubstring("\n"), "one line: %s", r)
		ExpectWithOffset(1, msg).NotTo(ContainSubstring("goroutine"))
		ExpectWithOffset(1, msg).NotTo(ContainSubstring("{"), "no raw JSON: %s", r)
		ExpectWithOffset(1, msg).To(MatchRegexp(`deletionProtection.*false.*`+where+`.*delete again`), "the two steps: %s", r)
	}

	It("refuses while deletionProtection is true, explaining the two steps", func(ctx SpecContext) {
		createJSON(ctx, ns, "guarded", "--api", "platform-api:user")
		cred := credential(ctx, ns, "guarded")
		patch := client.MergeFrom(cred.DeepCopy())
		cred.Spec.DeletionProtection = true
		Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())

		expectProtectionRefusal(admin(ctx, "-n", ns, "delete", "guarded", "--confirm", "guarded"), "kubectl")
		Expect(exists(ctx, ns, "guarded")()).To(BeTrue())
		By("refusing with --force too: --force is for the GitOps rule, not for protection")
		expectProtectionRefusal(admin(ctx, "-n", ns, "delete", "guarded", "--confirm", "guarded", "--force"), "kubectl")
		Expect(exists(ctx, ns, "guarded")()).To(BeTrue())
	})

	It("sends the first step to Git for a protected credential Argo CD applies", func(ctx SpecContext) {
		applyAsArgoCD(ctx, ns, "guarded-synced", map[string]any{
			"apis":               []any{map[string]any{"name": "platform-api", "permission": "user"}},
			"deletionProtection": true,
		})
		expectProtectionRefusal(admin(ctx, "-n", ns, "delete", "guarded-synced", "--confirm", "guarded-synced"), "in Git")
		Expect(exists(ctx, ns, "guarded-synced")()).To(BeTrue())
	})
})
