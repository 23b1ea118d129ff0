package integration

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// The ValidatingAdmissionPolicy of config/policy: only the manager writes identity and
// hash fields of status; the token server writes only the usage fields.
var _ = Describe("APICredential status policy", func() {
	var (
		ns   string
		cred *iamv1alpha1.APICredential
	)
	BeforeEach(func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "status-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
		cred = &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "guarded"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:  []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
				Scope: iamv1alpha1.CredentialScope{Workspaces: []string{"eu-prod"}},
			},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			return cred.Status.SecretHash
		}).ShouldNot(BeEmpty(), "the manager, as its own service account, writes the hash")
	})

	patchStatus := func(ctx context.Context, c client.Client, body string, opts ...client.SubResourcePatchOption) error {
		obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cred.Name}}
		return c.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(body)), opts...)
	}

	It("refuses identity and hash changes from a user with RBAC on apicredentials/status", func(ctx SpecContext) {
		mallory := statusWriter(ctx, ns, "mallory")
		// The API server loads policies and bindings asynchronously: wait with a dry run,
		// which changes nothing either way, until the policy answers.
		Eventually(func() error {
			return patchStatus(ctx, mallory, `{"status":{"clientID":"ksc_aaaaaaaaaaaaaaaaaaaaaaaaaa"}}`, client.DryRunAll)
		}).Should(MatchError(ContainSubstring("only the keysmith manager")))
		for _, body := range []string{
			`{"status":{"secretHash":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}}`,
			`{"status":{"clientID":"ksc_aaaaaaaaaaaaaaaaaaaaaaaaaa"}}`,
			`{"status":{"previousSecrets":[{"hash":"sha256:1111111111111111111111111111111111111111111111111111111111111111","expiresAt":"2099-01-01T00:00:00Z"}]}}`,
		} {
			err := patchStatus(ctx, mallory, body)
			Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "%s: got %v", body, err)
			Expect(err).To(MatchError(ContainSubstring("only the keysmith manager")), body)
			Expect(err).To(MatchError(ContainSubstring("mallory may not")), body)
			Expect(patchStatus(ctx, mallory, body, client.DryRunAll)).To(MatchError(ContainSubstring("only the keysmith manager")), "dry run too")
		}
		var after iamv1alpha1.APICredential
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), &after)).To(Succeed())
		Expect(after.Status.SecretHash).To(Equal(cred.Status.SecretHash))
		Expect(after.Status.ClientID).To(Equal(cred.Status.ClientID))

		By("letting the same user touch what is not identity")
		Expect(patchStatus(ctx, mallory, `{"status":{"lastUsedAddress":"192.0.2.1"}}`)).To(Succeed())
	})

	Describe("finding 5: status.account is protected", func() {
		// Token servers put status.account into X-Keysmith-Account and the
		// keysmith:account:* group: whoever moves it moves the credential to another account.
		const move = `{"status":{"account":"globex"}}`

		It("refuses a user with apicredentials/status write and the token server, admits the manager", func(ctx SpecContext) {
			Expect(cred.Status.Account).NotTo(BeEmpty())
			before := cred.Status.Account

			mallory := statusWriter(ctx, ns, "mallory")
			Eventually(func() error { return patchStatus(ctx, mallory, move, client.DryRunAll) }).
				Should(MatchError(ContainSubstring("only the keysmith manager")))
			err := patchStatus(ctx, mallory, move)
			Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err).To(MatchError(ContainSubstring("status.account")))
			Expect(err).To(MatchError(ContainSubstring("mallory may not")))

			Expect(patchStatus(ctx, userClient(serviceAccount("keysmith-token-server")), move)).To(MatchError(Or(
				ContainSubstring("may change only status.lastUsedTime, status.lastUsedAddress and status.revokedTokens"),
				ContainSubstring("only the keysmith manager"))))

			var after iamv1alpha1.APICredential
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), &after)).To(Succeed())
			Expect(after.Status.Account).To(Equal(before))

			By("admitting the same change from the manager, which selects the account")
			Expect(patchStatus(ctx, userClient(serviceAccount("keysmith-manager")), move)).To(Succeed())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), &after)).To(Succeed())
			Expect(after.Status.Account).To(Equal("globex"))
		})
	})

	It("lets the token server change only the usage fields", func(ctx SpecContext) {
		c := userClient(serviceAccount("keysmith-token-server"))

		Expect(patchStatus(ctx, c, `{"status":{"lastUsedTime":"2026-11-23T10:00:00Z","lastUsedAddress":"10.0.0.7"}}`)).To(Succeed())
		for _, body := range []string{
			`{"status":{"secretHash":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}}`,
			`{"status":{"observedGeneration":42}}`,
			`{"status":{"conditions":[]}}`,
		} {
			Expect(patchStatus(ctx, c, body)).To(MatchError(Or(
				ContainSubstring("may change only status.lastUsedTime, status.lastUsedAddress and status.revokedTokens"),
				ContainSubstring("only the keysmith manager"))), body)
		}
	})
})
