package webhook

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// patchCred merge-patches the credential ns/name as c.
func patchCred(ctx context.Context, c client.Client, ns, name, body string) error {
	obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(body)))
}

// grantRule lets its subject grant permission perm of api.
func grantRule(api, perm string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{
		APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apidefinitions/" + perm},
		ResourceNames: []string{api}, Verbs: []string{GrantVerb},
	}
}

var _ = Describe("finding 6: reactivation needs the grants", func() {
	var (
		ns      string
		expires time.Time
	)
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		expires = time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		By("an admin deactivating a powerful credential during an incident, with an expiry")
		incident := credential(ns, "incident", grant("platform-api", "admin"))
		incident.Spec.Active = ptr.To(false)
		incident.Spec.ExpiresAt = &metav1.Time{Time: expires}
		Expect(k8sClient.Create(ctx, incident)).To(Succeed())
		Expect(k8sClient.Create(ctx, credential(ns, "running", grant("platform-api", "admin")))).To(Succeed())
	})

	refusedFor := func(field string) OmegaMatcher {
		return And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(field+": Forbidden: ")),
			MatchError(ContainSubstring(`which needs every grant the credential holds: dave may not grant apidefinitions/admin "platform-api" in namespace`)),
			MatchError(ContainSubstring(`missing grant apidefinitions/admin "platform-api"`)),
		)
	}

	It("refuses whoever may patch but lacks the grant: reactivate, remove or extend expiresAt, add the rebind annotation", func(ctx SpecContext) {
		dave, _ := userClient("dave")
		allow(ctx, ns, "dave", manageCredentials)
		By("waiting for RBAC to let dave patch at all")
		Eventually(func() error {
			return patchCred(ctx, dave, ns, "incident", `{"spec":{"displayName":"Incident 42"}}`)
		}).Should(Succeed())

		for _, tc := range []struct{ field, body string }{
			{"spec.active", `{"spec":{"active":true}}`},
			{"spec.active", `{"spec":{"active":null}}`}, // absent means true
			{"spec.expiresAt", `{"spec":{"expiresAt":null}}`},
			{"spec.expiresAt", `{"spec":{"expiresAt":"` + expires.Add(24*time.Hour).Format(time.RFC3339) + `"}}`},
			{"metadata.annotations[iam.keysmith.dev/rebind]", `{"metadata":{"annotations":{"iam.keysmith.dev/rebind":"true"}}}`},
		} {
			Expect(patchCred(ctx, dave, ns, "incident", tc.body)).To(refusedFor(tc.field), tc.body)
		}
		var after iamv1alpha1.APICredential
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "incident"}, &after)).To(Succeed())
		Expect(after.Spec.IsActive()).To(BeFalse())
		Expect(after.Spec.ExpiresAt.Time).To(BeTemporally("==", expires))
		Expect(after.Annotations).NotTo(HaveKey(iamv1alpha1.RebindAnnotation))

		By("admitting what makes a credential less powerful: shortening the expiry, deactivating")
		Expect(patchCred(ctx, dave, ns, "incident", `{"spec":{"expiresAt":"`+expires.Add(-30*time.Minute).Format(time.RFC3339)+`"}}`)).To(Succeed())
		Expect(patchCred(ctx, dave, ns, "running", `{"spec":{"active":false}}`)).To(Succeed())
		Expect(patchCred(ctx, dave, ns, "running", `{"spec":{"expiresAt":"`+expires.Format(time.RFC3339)+`"}}`)).To(Succeed())
		Expect(patchCred(ctx, dave, ns, "running", `{"spec":{"rotation":{"keyVersion":2}}}`)).To(Succeed())

		By("refusing the rebind annotation on create too")
		withRebind := credential(ns, "restored", grant("platform-api", "admin"))
		withRebind.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		Expect(dave.Create(ctx, withRebind)).To(MatchError(ContainSubstring(
			`metadata.annotations[iam.keysmith.dev/rebind]: Forbidden: adding it asks the operator to adopt the Secret the credential names, which needs every grant the credential holds`)))
	})

	It("admits all of it from a user who holds the grants, and the rebind annotation only with the rebind verb too", func(ctx SpecContext) {
		erin, _ := userClient("erin")
		allow(ctx, ns, "erin", manageCredentials, grantRule("platform-api", "admin"))
		Eventually(func() error {
			return patchCred(ctx, erin, ns, "incident", `{"spec":{"active":true}}`)
		}).Should(Succeed())
		Expect(patchCred(ctx, erin, ns, "incident", `{"spec":{"expiresAt":"`+expires.Add(24*time.Hour).Format(time.RFC3339)+`"}}`)).To(Succeed())
		Expect(patchCred(ctx, erin, ns, "incident", `{"spec":{"expiresAt":null}}`)).To(Succeed())

		By("refusing the rebind annotation to a holder of every grant without the rebind verb: the grants do not make a free client ID hers")
		rebindRefused := And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(`metadata.annotations[iam.keysmith.dev/rebind]: Forbidden: erin may not rebind apicredentials`)),
			MatchError(ContainSubstring(`missing rebind apicredentials`)),
		)
		Expect(patchCred(ctx, erin, ns, "incident", `{"metadata":{"annotations":{"iam.keysmith.dev/rebind":"true"}}}`)).To(rebindRefused)
		withRebind := credential(ns, "restored", grant("platform-api", "admin"))
		withRebind.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		Expect(erin.Create(ctx, withRebind)).To(rebindRefused)

		By("admitting it once she may rebind that credential")
		allow(ctx, ns, "erin", rbacv1.PolicyRule{
			APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apicredentials"},
			ResourceNames: []string{"incident", "restored"}, Verbs: []string{RebindVerb},
		})
		Eventually(func() error {
			return patchCred(ctx, erin, ns, "incident", `{"metadata":{"annotations":{"iam.keysmith.dev/rebind":"true"}}}`)
		}).Should(Succeed())
		Expect(erin.Create(ctx, withRebind)).To(Succeed())
	})
})

var _ = Describe("assume: naming another account in spec.scope.account", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-", Labels: map[string]string{iamv1alpha1.AccountLabel: "acme"}}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	inAccount := func(name, account string) *iamv1alpha1.APICredential {
		c := credential(ns, name, grant("platform-api", "user"))
		c.Spec.Scope.Account = account
		return c
	}

	It("needs assume accounts/<account>, delegated to one namespace by a Role with resourceNames; the namespace's own account needs nothing", func(ctx SpecContext) {
		frank, _ := userClient("frank")
		allow(ctx, ns, "frank", manageCredentials, grantRule("platform-api", "user"))

		By("admitting the namespace's own account, named or selected, with the grant alone")
		// Eventually: until RBAC sees the binding and the webhook's cache the namespace.
		Eventually(func() error { return frank.Create(ctx, inAccount("own", "acme")) }).Should(Succeed())
		Expect(frank.Create(ctx, inAccount("selected", ""))).To(Succeed())

		By("refusing another account, naming spec.scope.account and the missing verb")
		err := frank.Create(ctx, inAccount("foreign", "globex"))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err).To(MatchError(ContainSubstring(`missing assume accounts "globex"`)))
		Expect(err).To(MatchError(ContainSubstring(`spec.scope.account: Forbidden: frank may not assume accounts "globex" in namespace "` + ns + `"`)))
		Expect(err).To(MatchError(ContainSubstring(`naming an account other than the namespace's own ("acme") needs RBAC verb assume on resource accounts of group iam.keysmith.dev with that name`)))
		By("refusing an update that moves a credential there")
		Expect(patchCred(ctx, frank, ns, "own", `{"spec":{"scope":{"account":"globex"}}}`)).To(MatchError(ContainSubstring(`frank may not assume accounts "globex"`)))

		By("delegating assume on accounts/globex only, in this namespace only")
		allow(ctx, ns, "frank", rbacv1.PolicyRule{
			APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"accounts"},
			ResourceNames: []string{"globex"}, Verbs: []string{AssumeVerb},
		})
		Eventually(func() error { return frank.Create(ctx, inAccount("foreign", "globex")) }).Should(Succeed())
		Expect(patchCred(ctx, frank, ns, "own", `{"spec":{"scope":{"account":"globex"}}}`)).To(Succeed())
		Expect(frank.Create(ctx, inAccount("initech", "initech"))).To(MatchError(ContainSubstring(`frank may not assume accounts "initech"`)))

		other := newNamespace(ctx)
		allow(ctx, other, "frank", manageCredentials, grantRule("platform-api", "user"))
		elsewhere := inAccount("foreign", "globex")
		elsewhere.Namespace = other
		Eventually(func() error { return frank.Create(ctx, elsewhere.DeepCopy()) }).
			Should(MatchError(ContainSubstring(`frank may not assume accounts "globex" in namespace "` + other + `"`)))
		By("while a namespace without the label has its name as its own account")
		named := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "own"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:  []iamv1alpha1.APIGrant{grant("platform-api", "user")},
				Scope: iamv1alpha1.CredentialScope{Account: other},
			},
		}
		Eventually(func() error { return frank.Create(ctx, named.DeepCopy()) }).Should(Succeed())
	})

	It("asks for assume again when a foreign-account credential is reactivated", func(ctx SpecContext) {
		foreign := inAccount("dormant", "globex")
		foreign.Spec.Active = ptr.To(false)
		Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
		gina, _ := userClient("gina")
		allow(ctx, ns, "gina", manageCredentials, grantRule("platform-api", "user"))
		Eventually(func() error {
			return patchCred(ctx, gina, ns, "dormant", `{"spec":{"displayName":"dormant"}}`)
		}).Should(Succeed())
		Expect(patchCred(ctx, gina, ns, "dormant", `{"spec":{"active":true}}`)).To(MatchError(ContainSubstring(`gina may not assume accounts "globex"`)))
	})
})
