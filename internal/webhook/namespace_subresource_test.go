package webhook

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbac "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Security review of the namespaces webhook (commit 0966735): the API server keeps the
// metadata (labels, annotations) of an update through the namespaces/finalize and
// namespaces/status subresources, which a webhook registered for "namespaces" alone is
// not asked about. A tenant whose Role in its own namespace lets it update those
// subresources (a RoleBinding in a namespace authorizes requests on that Namespace
// object) must not set default-apis past the grant check.
var _ = Describe("workspace default credential: the annotation through a Namespace subresource", func() {
	It("TestDefaultAPIsThroughNamespaceSubresource: refuses a tenant without the grants who sets it through namespaces/finalize or namespaces/status", func(ctx SpecContext) {
		ns := workspaceNamespace(ctx, "")
		tess, _ := userClient("tess")
		allow(ctx, ns, "tess", rbac.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"namespaces", "namespaces/finalize", "namespaces/status"},
			ResourceNames: []string{ns}, Verbs: []string{"get", "update"},
		})
		get := func() *corev1.Namespace {
			live := &corev1.Namespace{}
			ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: ns}, live)).To(Succeed())
			return live
		}
		By("waiting for RBAC to let tess update the subresources at all")
		Eventually(func() error { return tess.SubResource("finalize").Update(ctx, get()) }).Should(Succeed())
		Eventually(func() error { return tess.Status().Update(ctx, get()) }).Should(Succeed())

		refused := And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(`tess may not grant apidefinitions/admin "platform-api"`)),
		)
		By("refusing the annotation through namespaces/finalize")
		n := get()
		n.Annotations = map[string]string{iamv1alpha1.DefaultAPIsAnnotation: "platform-api:admin"}
		Expect(tess.SubResource("finalize").Update(ctx, n)).To(refused)
		By("refusing the annotation through namespaces/status")
		n = get()
		n.Annotations = map[string]string{iamv1alpha1.DefaultAPIsAnnotation: "platform-api:admin"}
		Expect(tess.Status().Update(ctx, n)).To(refused)
		Expect(get().Annotations).NotTo(HaveKey(iamv1alpha1.DefaultAPIsAnnotation), "nothing set")
	})
})
