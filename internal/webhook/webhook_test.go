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
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func newNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-"}}
	ExpectWithOffset(1, k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func credential(ns, name string, apis ...iamv1alpha1.APIGrant) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       iamv1alpha1.APICredentialSpec{APIs: apis},
	}
}

func grant(api, perm string) iamv1alpha1.APIGrant {
	return iamv1alpha1.APIGrant{Name: api, Permission: perm}
}

// allow binds user to a Role in ns with the given rules.
func allow(ctx context.Context, ns, user string, rules ...rbacv1.PolicyRule) {
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: user + "-"}, Rules: rules}
	ExpectWithOffset(1, k8sClient.Create(ctx, role)).To(Succeed())
	ExpectWithOffset(1, k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})).To(Succeed())
}

var manageCredentials = rbacv1.PolicyRule{
	APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apicredentials"},
	Verbs: []string{"get", "list", "create", "update", "patch", "delete"},
}

var _ = Describe("APICredential admission", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	DescribeTable("refuses specs that break the catalog, naming field, value and what is allowed",
		func(ctx SpecContext, mutate func(*iamv1alpha1.APICredential), want ...string) {
			cred := credential(ns, "bad", grant("platform-api", "user"))
			mutate(cred)
			err := k8sClient.Create(ctx, cred)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			for _, w := range want {
				Expect(err.Error()).To(ContainSubstring(w))
			}
			By("refusing it in a dry run as well, and storing nothing")
			Expect(k8sClient.Create(ctx, credential(ns, "bad", cred.Spec.APIs...), client.DryRunAll)).NotTo(Succeed())
			Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bad"}, &iamv1alpha1.APICredential{}))).To(BeTrue())
		},
		Entry("an unknown API", func(c *iamv1alpha1.APICredential) { c.Spec.APIs = []iamv1alpha1.APIGrant{grant("billing-api", "user")} },
			`spec.apis[0].name: Invalid value: "billing-api": no APIDefinition with this name exists; known APIs: "dataplanning-api", `, `"profile-api"`),
		Entry("a permission the API does not offer", func(c *iamv1alpha1.APICredential) {
			c.Spec.APIs = []iamv1alpha1.APIGrant{grant("profile-api", "admin")}
		},
			`spec.apis[0].permission: Unsupported value: "admin": supported values: "read-only"`),
		Entry("a Workspace-level API without workspaces", func(c *iamv1alpha1.APICredential) {
			c.Spec.APIs = []iamv1alpha1.APIGrant{grant("profile-api", "read-only")}
		},
			`spec.scope.workspaces: Required value: APIDefinition "profile-api" (spec.apis[0]) applies at the Workspace level`),
		Entry("several problems at once", func(c *iamv1alpha1.APICredential) {
			c.Spec.APIs = []iamv1alpha1.APIGrant{grant("platform-api", "owner"), grant("nope", "x")}
		}, `spec.apis[0].permission: Unsupported value: "owner": supported values: "user", "admin"`, `spec.apis[1].name: Invalid value: "nope"`),
	)

	It("refuses an account or workspaces on an Org-level API", func(ctx SpecContext) {
		org := &iamv1alpha1.APIDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: "org-audit-api"},
			Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: "Audit API", ScopeLevel: iamv1alpha1.ScopeLevelOrg,
				Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET"}}}},
		}
		Expect(k8sClient.Create(ctx, org)).To(Succeed())
		// The catalog-integrity check reads credentials from the webhook's cache, which may
		// still hold the credential deleted at the end of this spec for a moment.
		DeferCleanup(func(ctx context.Context) {
			Eventually(func() error { return k8sClient.Delete(ctx, org) }).Should(Succeed())
		})
		cred := credential(ns, "audit", grant("org-audit-api", "read-only"))
		cred.Spec.Scope = iamv1alpha1.CredentialScope{Account: "acme", Workspaces: []string{"eu"}}
		// The webhook reads the catalog from its cache, which sees the new API shortly.
		Eventually(func() error { return k8sClient.Create(ctx, cred.DeepCopy()) }).Should(MatchError(And(
			ContainSubstring(`spec.scope.account: Forbidden: APIDefinition "org-audit-api" (spec.apis[0]) applies at the Org level`),
			ContainSubstring(`spec.scope.workspaces: Forbidden`))))
		cred.Spec.Scope = iamv1alpha1.CredentialScope{}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Expect(k8sClient.Delete(ctx, cred)).To(Succeed())
	})

	It("warns about what is legal but suspicious", func(ctx SpecContext) {
		c, w := userClient("wanda")
		allow(ctx, ns, "wanda", manageCredentials, rbacv1.PolicyRule{
			APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apidefinitions/user"}, Verbs: []string{"grant"},
		})
		cred := credential(ns, "stale", grant("platform-api", "user"))
		cred.Spec.ExpiresAt = &metav1.Time{Time: time.Now().Add(-time.Hour)}
		Eventually(func() error { return c.Create(ctx, cred.DeepCopy()) }).Should(Succeed())
		Expect(w.all()).To(ContainElement(ContainSubstring("spec.expiresAt")))
		Expect(w.all()).To(ContainElement(ContainSubstring("is in the past")))
	})

	Context("no escalation", func() {
		It("refuses a user without grant, then admits the same user once a namespaced Role delegates it", func(ctx SpecContext) {
			alice, _ := userClient("alice")
			allow(ctx, ns, "alice", manageCredentials)

			cred := credential(ns, "reader", grant("profile-api", "read-only"))
			cred.Spec.Scope.Workspaces = []string{"eu-prod"}
			// RBAC sees the new binding shortly; until then the refusal is RBAC's, not ours.
			Eventually(func() error { return alice.Create(ctx, cred.DeepCopy()) }).
				Should(MatchError(ContainSubstring(`missing grant apidefinitions/read-only "profile-api"`)))
			Expect(alice.Create(ctx, cred.DeepCopy(), client.DryRunAll)).To(MatchError(ContainSubstring(`missing grant apidefinitions/read-only "profile-api"`)))

			By("delegating grant on apidefinitions/read-only for profile-api only, in this namespace")
			allow(ctx, ns, "alice", rbacv1.PolicyRule{
				APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apidefinitions/read-only"},
				ResourceNames: []string{"profile-api"}, Verbs: []string{"grant"},
			})
			Eventually(func() error { return alice.Create(ctx, cred.DeepCopy()) }).Should(Succeed())

			By("refusing an update that adds a permission alice may not grant")
			Expect(alice.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			cred.Spec.APIs = append(cred.Spec.APIs, grant("platform-api", "admin"))
			err := alice.Update(ctx, cred)
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
			Expect(err).To(MatchError(ContainSubstring(`alice may not grant apidefinitions/admin "platform-api"`)))

			By("admitting updates that grant nothing new")
			Expect(alice.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			cred.Spec.DisplayName = "Profile reader"
			cred.Spec.Active = &[]bool{false}[0]
			Expect(alice.Update(ctx, cred)).To(Succeed())

			By("not letting the delegation reach another namespace")
			other := newNamespace(ctx)
			allow(ctx, other, "alice", manageCredentials)
			elsewhere := cred.DeepCopy()
			elsewhere.ObjectMeta = metav1.ObjectMeta{Namespace: other, Name: "reader"}
			Eventually(func() error { return alice.Create(ctx, elsewhere.DeepCopy()) }).
				Should(MatchError(ContainSubstring(`missing grant apidefinitions/read-only "profile-api"`)))
		})

		It("asks again when an update changes a permission", func(ctx SpecContext) {
			bob, _ := userClient("bob")
			allow(ctx, ns, "bob", manageCredentials, rbacv1.PolicyRule{
				APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apidefinitions/user"},
				ResourceNames: []string{"platform-api"}, Verbs: []string{"grant"},
			})
			cred := credential(ns, "automation", grant("platform-api", "user"))
			Eventually(func() error { return bob.Create(ctx, cred.DeepCopy()) }).Should(Succeed())
			Expect(bob.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			cred.Spec.APIs[0].Permission = "admin"
			Expect(bob.Update(ctx, cred)).To(MatchError(ContainSubstring(`bob may not grant apidefinitions/admin "platform-api"`)))
		})

		It("asks again when an update moves the credential to another account", func(ctx SpecContext) {
			admin := credential(ns, "powerful", grant("platform-api", "admin"))
			Expect(k8sClient.Create(ctx, admin)).To(Succeed()) // the cluster admin may grant it
			carol, _ := userClient("carol")
			allow(ctx, ns, "carol", manageCredentials)
			Eventually(func() error {
				c := &iamv1alpha1.APICredential{}
				if err := carol.Get(ctx, client.ObjectKeyFromObject(admin), c); err != nil {
					return err
				}
				c.Spec.Scope.Account = "another-account"
				return carol.Update(ctx, c)
			}).Should(MatchError(ContainSubstring(`carol may not grant apidefinitions/admin "platform-api"`)))

			By("while edits that keep grants and scope pass")
			Eventually(func() error {
				c := &iamv1alpha1.APICredential{}
				if err := carol.Get(ctx, client.ObjectKeyFromObject(admin), c); err != nil {
					return err
				}
				c.Spec.DisplayName = "Renamed by carol"
				return carol.Update(ctx, c)
			}).Should(Succeed())
		})
	})

	Context("deletion protection", func() {
		It("refuses DELETE until spec.deletionProtection is set to false", func(ctx SpecContext) {
			cred := credential(ns, "precious", grant("platform-api", "user"))
			cred.Spec.DeletionProtection = true
			Expect(k8sClient.Create(ctx, cred)).To(Succeed())

			for _, opts := range [][]client.DeleteOption{nil, {client.DryRunAll}} {
				err := k8sClient.Delete(ctx, cred, opts...)
				Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
				Expect(err).To(MatchError(ContainSubstring("spec.deletionProtection is true: to delete this credential, first set it to false")))
				Expect(err).To(MatchError(ContainSubstring(`kubectl -n ` + ns + ` patch apicredential precious`)))
			}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())

			patch := client.MergeFrom(cred.DeepCopy())
			cred.Spec.DeletionProtection = false
			Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())
			Expect(k8sClient.Delete(ctx, cred, client.DryRunAll)).To(Succeed())
			Expect(k8sClient.Delete(ctx, cred)).To(Succeed())
		})
	})
})

var _ = Describe("APIDefinition integrity", func() {
	It("refuses to delete an API that credentials grant, naming up to five, in a dry run too", func(ctx SpecContext) {
		def := &iamv1alpha1.APIDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: "reports-api"},
			Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: "Reports API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
				Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET"}}, {Name: "admin", Methods: []string{"*"}}}},
		}
		Expect(k8sClient.Create(ctx, def)).To(Succeed())
		ns := newNamespace(ctx)
		var creds []*iamv1alpha1.APICredential
		for _, name := range []string{"a", "b", "c", "d", "e", "f", "g"} {
			c := credential(ns, name, grant("reports-api", "read-only"))
			Eventually(func() error { return k8sClient.Create(ctx, c) }).Should(Succeed())
			creds = append(creds, c)
		}

		refused := MatchError(And(
			ContainSubstring(`it is granted by 7 APICredentials (`+ns+`/a, `+ns+`/b, `+ns+`/c, `+ns+`/d, `+ns+`/e, and 2 more)`),
			ContainSubstring("remove the API from those credentials first")))
		// A dry run first, until the webhook's cache has seen all seven credentials; a
		// real DELETE tried too early would succeed.
		Eventually(func() error { return k8sClient.Delete(ctx, def, client.DryRunAll) }).Should(refused)
		Expect(k8sClient.Delete(ctx, def)).To(refused)

		By("refusing to remove a permission in use, admitting the removal of an unused one")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(def), def)).To(Succeed())
		def.Spec.Permissions = []iamv1alpha1.Permission{{Name: "admin", Methods: []string{"*"}}}
		Expect(k8sClient.Update(ctx, def)).To(MatchError(ContainSubstring(`spec.permissions: Forbidden: permission "read-only" is granted by 7 APICredentials`)))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(def), def)).To(Succeed())
		def.Spec.Permissions = []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET"}}}
		Expect(k8sClient.Update(ctx, def)).To(Succeed())

		By("admitting the delete once no credential grants it")
		for _, c := range creds {
			Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		}
		Eventually(func() error { return k8sClient.Delete(ctx, def) }).Should(Succeed())
	})
})
