// Package rbac proves the ClusterRoles of config/rbac/roles.yaml against a real
// kube-apiserver: for every role and every action of the table in docs/access-control.md,
// a user bound to the role asks the API server with a SubjectAccessReview and must get the
// documented answer. It proves the manager's own RBAC (config/rbac/role.yaml) the same way.
package rbac

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// namespace is where RoleBindings bind users and where namespaced actions are asked.
const namespace = "team-checkout"

var group = iamv1alpha1.GroupVersion.Group

// A role is one column of the table. keysmith's own ClusterRoles are bound with a
// ClusterRoleBinding for cluster-scoped actions and a RoleBinding in namespace for the
// others; the built-in roles and the delegating Roles are always bound with a RoleBinding,
// as namespace admins, editors and viewers are.
type role struct {
	kind, name  string
	clusterWide bool
}

var roles = []role{
	{"ClusterRole", "keysmith-admin", true},
	{"ClusterRole", "keysmith-compliance-admin", true},
	{"ClusterRole", "keysmith-viewer", true},
	{"ClusterRole", "admin", false},
	{"ClusterRole", "edit", false},
	{"ClusterRole", "view", false},
	{"Role", grantProfileReadOnly.Name, false},
	{"Role", assumeAccountGlobex.Name, false},
}

// grantProfileReadOnly is the example of docs/access-control.md: a Role that delegates
// granting the read-only permission of profile-api, and nothing else.
var grantProfileReadOnly = &rbacv1.Role{
	ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "grant-profile-api-read-only"},
	Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{group}, Resources: []string{"apidefinitions/read-only"},
		ResourceNames: []string{"profile-api"}, Verbs: []string{"grant"},
	}},
}

// assumeAccountGlobex is the other example of docs/access-control.md: a Role that
// delegates naming one account, globex, in spec.scope.account, to credentials of one
// namespace.
var assumeAccountGlobex = &rbacv1.Role{
	ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "assume-account-globex"},
	Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{group}, Resources: []string{"accounts"},
		ResourceNames: []string{"globex"}, Verbs: []string{"assume"},
	}},
}

const (
	Y = true
	N = false
)

// accessTable is the role × action table of docs/access-control.md, row for row: the
// requests of an action all get the answer of the role's column.
var accessTable = []struct {
	action   string
	requests []authorizationv1.ResourceAttributes
	allowed  []bool
}{
	// keysmith-admin, keysmith-compliance-admin, keysmith-viewer, admin, edit, view, grant-profile-api-read-only, assume-account-globex
	{"create an APICredential", credentials("", "create"),
		[]bool{Y, Y, N, Y, Y, N, N, N}},
	{"update an APICredential (edit, activate, deactivate, rotate)", credentials("", "update", "patch"),
		[]bool{Y, Y, N, Y, Y, N, N, N}},
	{"delete an APICredential", credentials("", "delete"),
		[]bool{Y, Y, N, Y, Y, N, N, N}},
	{"read APICredentials", credentials("", "get", "list", "watch"),
		[]bool{Y, Y, Y, Y, Y, Y, N, N}},
	{"read APIDefinitions", definitions("get", "list", "watch"),
		[]bool{Y, Y, Y, N, N, N, N, N}},
	{"create, update or delete an APIDefinition", definitions("create", "update", "patch", "delete"),
		[]bool{Y, N, N, N, N, N, N, N}},
	{"grant apidefinitions/read-only on profile-api", grant("profile-api", "read-only"),
		[]bool{Y, Y, N, N, N, N, Y, N}},
	{"grant apidefinitions/admin on platform-api", grant("platform-api", "admin"),
		[]bool{Y, Y, N, N, N, N, N, N}},
	{"read Secrets", secrets("get", "list", "watch"),
		[]bool{N, N, N, Y, Y, N, N, N}},
	{"write APICredential status", credentials("status", "update", "patch"),
		[]bool{N, N, N, N, N, N, N, N}},
	{"assume account globex (name it in spec.scope.account)", assume("globex"),
		[]bool{Y, N, N, N, N, N, N, Y}},
	{"assume account initech", assume("initech"),
		[]bool{Y, N, N, N, N, N, N, N}},
	{"rebind an APICredential (adopt the Secret it holds after a restore)", each(authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apicredentials", Name: "restored"}, []string{"rebind"}),
		[]bool{Y, N, N, N, N, N, N, N}},
}

func credentials(subresource string, verbs ...string) []authorizationv1.ResourceAttributes {
	return each(authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apicredentials", Subresource: subresource}, verbs)
}

func definitions(verbs ...string) []authorizationv1.ResourceAttributes {
	return each(authorizationv1.ResourceAttributes{Group: group, Resource: "apidefinitions"}, verbs)
}

// grant is what the admission webhook asks for every permission a credential gains.
func grant(api, permission string) []authorizationv1.ResourceAttributes {
	return each(authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apidefinitions", Subresource: permission, Name: api}, []string{"grant"})
}

// assume is what the admission webhook asks when spec.scope.account names an account
// other than the namespace's own.
func assume(account string) []authorizationv1.ResourceAttributes {
	return each(authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "accounts", Name: account}, []string{"assume"})
}

func secrets(verbs ...string) []authorizationv1.ResourceAttributes {
	return each(authorizationv1.ResourceAttributes{Namespace: namespace, Resource: "secrets"}, verbs)
}

func each(attrs authorizationv1.ResourceAttributes, verbs []string) []authorizationv1.ResourceAttributes {
	out := make([]authorizationv1.ResourceAttributes, 0, len(verbs))
	for _, v := range verbs {
		a := attrs
		a.Verb = v
		out = append(out, a)
	}
	return out
}

// user is the user bound to r for requests in namespace ns ("" for cluster-scoped ones).
func user(r role, ns string) string {
	if ns == "" && r.clusterWide {
		return r.name + "@cluster"
	}
	return r.name + "@" + namespace
}

var (
	testEnv   *envtest.Environment
	k8sClient client.Client
)

func TestRBAC(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(20 * time.Second) // Gomega's 1 s is one hiccup of a shared machine (see controllers/suite_test.go)
	RunSpecs(t, "RBAC Suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8sClient, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	By("applying config/rbac/roles.yaml and the delegating Roles of the docs")
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})).To(Succeed())
	Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", "rbac", "roles.yaml"), "")).To(Succeed())
	Expect(k8sClient.Create(ctx, grantProfileReadOnly.DeepCopy())).To(Succeed())
	Expect(k8sClient.Create(ctx, assumeAccountGlobex.DeepCopy())).To(Succeed())

	// envtest runs no kube-controller-manager, so admin, edit and view would stay without
	// keysmith's rules: run its clusterrole-aggregation controller, as a cluster does.
	By("running kube-controller-manager's clusterrole-aggregation controller")
	log := startAggregation(ctx)
	Eventually(func(g Gomega) {
		for builtin, from := range map[string][]string{
			"admin": {"keysmith-aggregate-to-admin", "keysmith-aggregate-to-edit", "keysmith-aggregate-to-view"},
			"edit":  {"keysmith-aggregate-to-edit", "keysmith-aggregate-to-view"},
			"view":  {"keysmith-aggregate-to-view"},
		} {
			var aggregated rbacv1.ClusterRole
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: builtin}, &aggregated)).To(Succeed())
			for _, name := range from {
				var r rbacv1.ClusterRole
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &r)).To(Succeed())
				g.Expect(aggregated.Rules).To(ContainElements(r.Rules), "%s aggregates %s", builtin, name)
			}
		}
	}).WithTimeout(time.Minute).Should(Succeed(), func() string { return "kube-controller-manager log:\n" + tail(log) })

	By("applying the manager's own RBAC (config/rbac/role.yaml, role_binding.yaml) in its namespace")
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})).To(Succeed())
	for _, f := range []string{"service_account.yaml", "role.yaml", "role_binding.yaml"} {
		Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", "rbac", f), operatorNamespace)).To(Succeed())
	}

	By("binding one user per role and binding kind")
	for _, r := range roles {
		bindUser(ctx, r, namespace)
		if r.clusterWide {
			bindUser(ctx, r, "")
		}
	}
	awaitAuthorizer(ctx)
})

var _ = Describe("Access control", func() {
	It("aggregates keysmith into the built-in roles with small roles of its own", func(ctx SpecContext) {
		const prefix = "rbac.authorization.k8s.io/aggregate-to-"
		aggregationLabels := func(name string) map[string]string {
			var r rbacv1.ClusterRole
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &r)).To(Succeed())
			labels := map[string]string{}
			for k, v := range r.Labels {
				if strings.HasPrefix(k, prefix) {
					labels[k] = v
				}
			}
			return labels
		}
		for _, builtin := range []string{"admin", "edit", "view"} {
			Expect(aggregationLabels("keysmith-aggregate-to-" + builtin)).To(Equal(map[string]string{prefix + builtin: "true"}))
		}
		for _, named := range []string{"keysmith-admin", "keysmith-compliance-admin", "keysmith-viewer"} {
			Expect(aggregationLabels(named)).To(BeEmpty(), "%s is bound by name, never aggregated", named)
		}
	})

	for _, row := range accessTable {
		if len(row.allowed) != len(roles) {
			panic(fmt.Sprintf("row %q has %d answers for %d roles", row.action, len(row.allowed), len(roles)))
		}
		Describe(row.action, func() {
			for i, r := range roles {
				may := map[bool]string{true: "may", false: "may not"}[row.allowed[i]]
				It(fmt.Sprintf("%s %s", r.name, may), func(ctx SpecContext) {
					for _, attrs := range row.requests {
						sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
							User: user(r, attrs.Namespace), Groups: []string{"system:authenticated"},
							ResourceAttributes: &attrs,
						}}
						Expect(k8sClient.Create(ctx, sar)).To(Succeed())
						Expect(sar.Status.Allowed).To(Equal(row.allowed[i]), "%s %s %+v: %s", sar.Spec.User, may, attrs, sar.Status.Reason)
						// RBAC reports a binding it could not follow (a missing role) in the
						// reason of a denial: a denial must come from the rules alone.
						Expect(sar.Status.EvaluationError).To(BeEmpty(), "%+v", attrs)
						if !sar.Status.Allowed {
							Expect(sar.Status.Reason).To(BeEmpty(), "%+v", attrs)
						}
					}
				})
			}
		})
	}
})

// operatorNamespace is where config/default installs the manager.
const operatorNamespace = "keysmith-system"

// The manager's ClusterRole and Role (config/rbac/role.yaml, generated from the
// controllers' markers): ConfigMaps only in its own namespace, where the public signing
// keys are; Secrets everywhere, for the credential Secrets of every namespace.
var _ = Describe("The manager's RBAC", func() {
	manager := "system:serviceaccount:" + operatorNamespace + ":keysmith-manager"
	DescribeTable("answers",
		func(ctx SpecContext, allowed bool, attrs authorizationv1.ResourceAttributes) {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: manager, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
				ResourceAttributes: &attrs,
			}}
			Expect(k8sClient.Create(ctx, sar)).To(Succeed())
			Expect(sar.Status.Allowed).To(Equal(allowed), "%+v: %s", attrs, sar.Status.Reason)
		},
		Entry("write ConfigMaps in its namespace", true, authorizationv1.ResourceAttributes{Namespace: operatorNamespace, Resource: "configmaps", Verb: "update"}),
		Entry("watch ConfigMaps in its namespace", true, authorizationv1.ResourceAttributes{Namespace: operatorNamespace, Resource: "configmaps", Verb: "watch"}),
		Entry("write ConfigMaps in another namespace", false, authorizationv1.ResourceAttributes{Namespace: namespace, Resource: "configmaps", Verb: "create"}),
		Entry("list ConfigMaps cluster-wide", false, authorizationv1.ResourceAttributes{Resource: "configmaps", Verb: "list"}),
		Entry("write Secrets in a team's namespace (credential Secrets)", true, authorizationv1.ResourceAttributes{Namespace: namespace, Resource: "secrets", Verb: "create"}),
		Entry("read Namespaces (their account label)", true, authorizationv1.ResourceAttributes{Resource: "namespaces", Verb: "get"}),
		Entry("create SubjectAccessReviews (grant, assume)", true, authorizationv1.ResourceAttributes{Group: "authorization.k8s.io", Resource: "subjectaccessreviews", Verb: "create"}),
		Entry("delete APICredentials", false, authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apicredentials", Verb: "delete"}),
		Entry("create APICredentials (a workspace's default credential)", true, authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apicredentials", Verb: "create"}),
		Entry("update APICredentials (it never rewrites a spec)", false, authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apicredentials", Verb: "update"}),
		Entry("grant a permission (its default-credential create is admitted only as the annotation lists it)", false, authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: "apidefinitions", Subresource: "admin", Name: "platform-api", Verb: "grant"}),
		Entry("ask who it is (SelfSubjectReview, the default of --manager-username)", true, authorizationv1.ResourceAttributes{Group: "authentication.k8s.io", Resource: "selfsubjectreviews", Verb: "create"}),
	)
})

// bindUser binds user(r, ns) to r: with a ClusterRoleBinding when ns is empty, else with a
// RoleBinding in ns.
func bindUser(ctx SpecContext, r role, ns string) {
	name := user(r, ns)
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}}
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: r.kind, Name: r.name}
	meta := metav1.ObjectMeta{Name: strings.ReplaceAll(name, "@", "-at-")}
	var binding client.Object = &rbacv1.ClusterRoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subjects}
	if ns != "" {
		meta.Namespace = ns
		binding = &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subjects}
	}
	Expect(k8sClient.Create(ctx, binding)).To(Succeed())
}

// awaitAuthorizer waits until kube-apiserver's RBAC authorizer has seen every role and
// binding created so far, so that a denial means the policy denies, not that the
// authorizer's caches lag. It watches roles, rolebindings, clusterroles and
// clusterrolebindings, each in resourceVersion order: once it knows an object of each kind
// created after all the others, it knows them all.
func awaitAuthorizer(ctx SpecContext) {
	const syncUser = "authorizer-sync"
	markers := func(resource string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{{APIGroups: []string{"sync.test.keysmith.dev"}, Resources: []string{resource}, Verbs: []string{"get"}}}
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: syncUser}}
	meta := metav1.ObjectMeta{Name: syncUser}
	nsMeta := metav1.ObjectMeta{Namespace: namespace, Name: syncUser}
	for _, obj := range []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: meta, Rules: markers("clustermarkers")},
		&rbacv1.Role{ObjectMeta: nsMeta, Rules: markers("markers")},
		&rbacv1.ClusterRoleBinding{ObjectMeta: meta, Subjects: subjects, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: syncUser}},
		&rbacv1.RoleBinding{ObjectMeta: nsMeta, Subjects: subjects, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: syncUser}},
	} {
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	}
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Verb: "get", Group: "sync.test.keysmith.dev", Resource: "clustermarkers"},
		{Verb: "get", Group: "sync.test.keysmith.dev", Resource: "markers", Namespace: namespace},
	} {
		Eventually(func(g Gomega) bool {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: syncUser, ResourceAttributes: &attrs}}
			g.Expect(k8sClient.Create(ctx, sar)).To(Succeed())
			return sar.Status.Allowed
		}).Should(BeTrue(), "the authorizer sees the %s marker", attrs.Resource)
	}
}

// startAggregation runs kube-controller-manager with only the clusterrole-aggregation
// controller until the suite ends, and returns the path of its log.
func startAggregation(ctx SpecContext) string {
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := u.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	dir := GinkgoT().TempDir()
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	Expect(os.WriteFile(kubeconfigPath, kubeconfig, 0o600)).To(Succeed())
	logPath := filepath.Join(dir, "kube-controller-manager.log")
	logFile, err := os.Create(logPath)
	Expect(err).NotTo(HaveOccurred())

	binary := filepath.Join(testEnv.BinaryAssetsDirectory, "kube-controller-manager")
	Expect(binary).To(BeAnExistingFile(), "hack/setup-envtest.sh builds it")
	cmd := exec.Command(binary, "--kubeconfig="+kubeconfigPath, "--controllers=clusterrole-aggregation",
		"--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=false")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = logFile.Close()
	})
	return logPath
}

// tail returns the end of a log file.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}
