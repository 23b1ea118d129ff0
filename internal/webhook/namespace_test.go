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
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// workspaceNamespace creates, as the admin, a namespace with the workspace label and,
// unless defaultAPIs is empty, the default-apis annotation.
func workspaceNamespace(ctx context.Context, defaultAPIs string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "workspace-", Labels: map[string]string{iamv1alpha1.WorkspaceLabel: "eu-prod"}}}
	if defaultAPIs != "" {
		ns.Annotations = map[string]string{iamv1alpha1.DefaultAPIsAnnotation: defaultAPIs}
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// patchNamespace merge-patches the namespace name as c.
func patchNamespace(ctx context.Context, c client.Client, name, body string) error {
	return c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, []byte(body)))
}

// allowCluster binds user to a ClusterRole with the given rules.
func allowCluster(ctx context.Context, user string, rules ...rbacv1.PolicyRule) {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: user + "-"}, Rules: rules}
	ExpectWithOffset(1, k8sClient.Create(ctx, role)).To(Succeed())
	ExpectWithOffset(1, k8sClient.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})).To(Succeed())
}

var manageNamespaces = rbacv1.PolicyRule{
	APIGroups: []string{""}, Resources: []string{"namespaces"},
	Verbs: []string{"get", "list", "create", "update", "patch"},
}

var _ = Describe("workspace default credential: the default-apis annotation", func() {
	const annotation = `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"platform-api:admin,dataplanning-api:admin"}}}`

	grantsRefused := func(user string) OmegaMatcher {
		return And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(`metadata.annotations[iam.keysmith.dev/default-apis]: the manager creates credential "primary" with these grants, so setting it needs them: `+user+` may not grant apidefinitions/admin "platform-api", grant apidefinitions/admin "dataplanning-api"`)),
		)
	}

	It("refuses a tenant without the grants who sets it, changes it, or labels an annotated namespace; admits other changes", func(ctx SpecContext) {
		ns := workspaceNamespace(ctx, "")
		hank, _ := userClient("hank")
		allowCluster(ctx, "hank", manageNamespaces)
		allow(ctx, ns, "hank", grantRule("platform-api", "user"))

		By("waiting for RBAC to let hank patch the namespace at all")
		Eventually(func() error {
			return patchNamespace(ctx, hank, ns, `{"metadata":{"labels":{"team":"checkout"}}}`)
		}).Should(Succeed())

		By("refusing to set it")
		Expect(patchNamespace(ctx, hank, ns, annotation)).To(grantsRefused("hank"))

		By("refusing to change it, even to one grant of two he lacks")
		Expect(patchNamespace(ctx, k8sClient, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"platform-api:user"}}}`)).To(Succeed())
		Expect(patchNamespace(ctx, hank, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"platform-api:user,dataplanning-api:admin"}}}`)).To(
			MatchError(ContainSubstring(`hank may not grant apidefinitions/admin "dataplanning-api" in namespace "` + ns + `"`)))
		By("admitting what he may grant, and changes that leave the annotation alone")
		Expect(patchNamespace(ctx, hank, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"platform-api:user"}}}`)).To(Succeed())
		Expect(patchNamespace(ctx, hank, ns, `{"metadata":{"labels":{"team":"payments"}}}`)).To(Succeed())

		By("refusing to add the label to a namespace that already has the annotation")
		other := newNamespace(ctx)
		Expect(patchNamespace(ctx, k8sClient, other, annotation)).To(Succeed(), "without the label the webhook is not asked")
		Expect(patchNamespace(ctx, hank, other, `{"metadata":{"labels":{"iam.keysmith.dev/workspace":"us-prod"}}}`)).To(grantsRefused("hank"))

		By("admitting removal of the label or the annotation: neither widens anything")
		Expect(patchNamespace(ctx, hank, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":null}}}`)).To(Succeed())
		Expect(patchNamespace(ctx, hank, ns, `{"metadata":{"labels":{"iam.keysmith.dev/workspace":null}}}`)).To(Succeed())

		By("refusing a namespace created with it, and admitting it once the grants are his cluster-wide")
		created := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "workspace-",
			Labels:      map[string]string{iamv1alpha1.WorkspaceLabel: "eu-prod"},
			Annotations: map[string]string{iamv1alpha1.DefaultAPIsAnnotation: "platform-api:admin,dataplanning-api:admin"}}}
		Expect(hank.Create(ctx, created.DeepCopy())).To(grantsRefused("hank"))
		allowCluster(ctx, "hank", grantRule("platform-api", "admin"), grantRule("dataplanning-api", "admin"))
		Eventually(func() error { return hank.Create(ctx, created.DeepCopy()) }).Should(Succeed())
	})

	It("refuses a malformed annotation, naming it", func(ctx SpecContext) {
		ns := workspaceNamespace(ctx, "")
		for value, msg := range map[string]string{
			"platform-api":                        `is not an api:permission pair`,
			"platform-api:user,platform-api:user": `lists API "platform-api" more than once`,
			"Platform:user":                       `API name "Platform" is not a DNS subdomain`,
		} {
			err := patchNamespace(ctx, k8sClient, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"`+value+`"}}}`)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: got %v", value, err)
			Expect(err).To(MatchError(ContainSubstring(`metadata.annotations[iam.keysmith.dev/default-apis]: Invalid value: "` + value + `": iam.keysmith.dev/default-apis `)))
			Expect(err).To(MatchError(ContainSubstring(msg)))
		}
	})
})

var _ = Describe("workspace default credential: the manager's create", func() {
	var ns string
	var manager client.Client
	BeforeEach(func(ctx SpecContext) {
		By("adding a second Account-level API to the catalog, so that the default can hold two")
		ledger := &iamv1alpha1.APIDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: "ledger-api"},
			Spec: iamv1alpha1.APIDefinitionSpec{
				DisplayName: "Ledger API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
				Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET"}}},
			},
		}
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, ledger))).To(Succeed())
		ns = workspaceNamespace(ctx, "platform-api:user,ledger-api:read-only")
		manager, _ = userClient(managerUser)
		allow(ctx, ns, managerUser, manageCredentials)
	})

	primary := func(apis ...iamv1alpha1.APIGrant) *iamv1alpha1.APICredential {
		c := credential(ns, iamv1alpha1.DefaultCredentialName, apis...)
		c.Spec.Scope.Workspaces = nil
		return c
	}
	exact := func() []iamv1alpha1.APIGrant {
		return []iamv1alpha1.APIGrant{grant("platform-api", "user"), grant("ledger-api", "read-only")}
	}
	refused := func(why string) OmegaMatcher {
		return And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(`a credential cannot exceed the privileges of who creates it`)),
			MatchError(ContainSubstring(`not admitted as the workspace's default credential: `+why)),
		)
	}

	It("refuses the manager, which holds no grants, whatever differs from the annotation", func(ctx SpecContext) {
		for _, tc := range []struct {
			what   string
			mutate func(*iamv1alpha1.APICredential)
			why    string
		}{
			{"another name", func(c *iamv1alpha1.APICredential) { c.Name = "secondary" }, `the manager creates only credentials named "primary"`},
			{"a wider permission", func(c *iamv1alpha1.APICredential) { c.Spec.APIs[0].Permission = "admin" }, `the spec is not exactly spec.apis`},
			{"an API more", func(c *iamv1alpha1.APICredential) {
				c.Spec.APIs = append(c.Spec.APIs, grant("profile-api", "read-only"))
				c.Spec.Scope.Workspaces = []string{"eu-prod"}
			}, `the spec is not exactly spec.apis`},
			{"the grants in another order", func(c *iamv1alpha1.APICredential) {
				c.Spec.APIs[0], c.Spec.APIs[1] = c.Spec.APIs[1], c.Spec.APIs[0]
			}, `the spec is not exactly spec.apis`},
			{"workspaces", func(c *iamv1alpha1.APICredential) { c.Spec.Scope.Workspaces = []string{"eu-prod"} }, `the spec is not exactly spec.apis`},
			{"an account", func(c *iamv1alpha1.APICredential) { c.Spec.Scope.Account = "globex" }, `the spec is not exactly spec.apis`},
			{"a token lifetime", func(c *iamv1alpha1.APICredential) {
				c.Spec.TokenPolicy.Lifetime = &metav1.Duration{Duration: 24 * time.Hour}
			}, `the spec is not exactly spec.apis`},
			{"the rebind annotation", func(c *iamv1alpha1.APICredential) {
				c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			}, `annotation iam.keysmith.dev/rebind is set`},
		} {
			c := primary(exact()...)
			tc.mutate(c)
			// Eventually: until RBAC lets the manager's user create at all.
			Eventually(func() error { return manager.Create(ctx, c.DeepCopy()) }).Should(refused(tc.why), tc.what)
		}
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "primary"}, &iamv1alpha1.APICredential{}))).To(BeTrue())

		By("refusing it in a namespace without the annotation")
		plain := newNamespace(ctx)
		allow(ctx, plain, managerUser, manageCredentials)
		c := primary(exact()...)
		c.Namespace = plain
		Eventually(func() error { return manager.Create(ctx, c) }).Should(refused(`namespace "` + plain + `" has not both`))
	})

	It("admits exactly what the annotation lists, with the defaults the API server fills in", func(ctx SpecContext) {
		Eventually(func() error { return manager.Create(ctx, primary(exact()...)) }).Should(Succeed())
		var got iamv1alpha1.APICredential
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "primary"}, &got)).To(Succeed())
		Expect(got.Spec.APIs).To(Equal(exact()))

		By("giving any other request of the manager's user the normal checks")
		Expect(manager.Create(ctx, credential(ns, "other", grant("platform-api", "user")))).To(
			MatchError(ContainSubstring(managerUser + ` may not grant apidefinitions/user "platform-api"`)))
		Expect(patchCred(ctx, manager, ns, "primary", `{"spec":{"apis":[{"name":"platform-api","permission":"admin"}]}}`)).To(
			MatchError(ContainSubstring(managerUser + ` may not grant apidefinitions/admin "platform-api"`)))
	})

	It("does not let another user pass as the manager", func(ctx SpecContext) {
		ivan, _ := userClient("ivan")
		allow(ctx, ns, "ivan", manageCredentials)
		Eventually(func() error { return ivan.Create(ctx, primary(exact()...)) }).Should(
			MatchError(ContainSubstring(`ivan may not grant apidefinitions/user "platform-api"`)))
	})
})

var _ = Describe("workspace default credential: the last credential", func() {
	lastRefused := func(ns string) OmegaMatcher {
		return And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(`it is the last APICredential of workspace namespace "`+ns+`", which keeps a default credential (annotation iam.keysmith.dev/default-apis): create another credential first, or remove the annotation (kubectl annotate namespace `+ns+` iam.keysmith.dev/default-apis-), then delete it again`)),
		)
	}
	del := func(ctx context.Context, ns, name string) error {
		return k8sClient.Delete(ctx, credential(ns, name))
	}

	It("refuses to delete the last one, admits it with two, and once the annotation is gone", func(ctx SpecContext) {
		ns := workspaceNamespace(ctx, "platform-api:user")
		Expect(k8sClient.Create(ctx, credential(ns, "primary", grant("platform-api", "user")))).To(Succeed())
		Expect(del(ctx, ns, "primary")).To(lastRefused(ns))

		By("admitting the delete while another credential stays, then refusing the other")
		Expect(k8sClient.Create(ctx, credential(ns, "replacement", grant("platform-api", "user")))).To(Succeed())
		Expect(del(ctx, ns, "primary")).To(Succeed())
		Expect(del(ctx, ns, "replacement")).To(lastRefused(ns))

		By("admitting it once the annotation is removed")
		Expect(patchNamespace(ctx, k8sClient, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":null}}}`)).To(Succeed())
		Expect(del(ctx, ns, "replacement")).To(Succeed())

		By("never refusing in a namespace without the workspace label")
		plain := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, credential(plain, "only", grant("platform-api", "user")))).To(Succeed())
		Expect(del(ctx, plain, "only")).To(Succeed())
	})

	It("admits deleting the last one while the namespace is being deleted", func(ctx SpecContext) {
		ns := workspaceNamespace(ctx, "platform-api:user")
		Expect(k8sClient.Create(ctx, credential(ns, "primary", grant("platform-api", "user")))).To(Succeed())
		Expect(del(ctx, ns, "primary")).To(lastRefused(ns))

		By("deleting the namespace: envtest runs no namespace controller, so the kubernetes finalizer keeps it Terminating")
		Expect(k8sClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		var terminating corev1.Namespace
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &terminating)).To(Succeed())
		Expect(terminating.DeletionTimestamp).NotTo(BeNil())
		Expect(terminating.Spec.Finalizers).To(ContainElement(corev1.FinalizerKubernetes))
		Expect(del(ctx, ns, "primary")).To(Succeed())
	})
})
