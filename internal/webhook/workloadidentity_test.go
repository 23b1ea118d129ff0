package webhook

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Issue 13 item 5: adding a workload ServiceAccount is as powerful as creating the
// credential (DESIGN §2 item 8); removing one or all is not.
func TestRegrantsWorkloadIdentity(t *testing.T) {
	wi := func(sas ...string) iamv1alpha1.APICredentialSpec {
		return iamv1alpha1.APICredentialSpec{WorkloadIdentity: &iamv1alpha1.WorkloadIdentity{ServiceAccounts: sas}}
	}
	const path = "spec.workloadIdentity.serviceAccounts"
	for _, tc := range []struct {
		name     string
		was, now iamv1alpha1.APICredentialSpec
		want     []string
	}{
		{name: "add workloadIdentity", now: wi("worker"), want: []string{path}},
		{name: "add a ServiceAccount", was: wi("worker"), now: wi("worker", "batch"), want: []string{path}},
		{name: "replace a ServiceAccount", was: wi("worker"), now: wi("batch"), want: []string{path}},
		{name: "reorder", was: wi("a", "b"), now: wi("b", "a")},
		{name: "remove a ServiceAccount", was: wi("a", "b"), now: wi("a")},
		{name: "remove workloadIdentity", was: wi("a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range regrants(&iamv1alpha1.APICredential{Spec: tc.was}, &iamv1alpha1.APICredential{Spec: tc.now}) {
				got = append(got, r.field.String())
			}
			NewWithT(t).Expect(got).To(Equal(tc.want))
		})
	}
}

var _ = Describe("issue 13 item 5: adding workload ServiceAccounts needs the grants", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		By("an admin creating a credential with one workload ServiceAccount")
		c := credential(ns, "wi", grant("platform-api", "admin"))
		c.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
	})
	serviceAccounts := func(ctx SpecContext) []string {
		var c iamv1alpha1.APICredential
		ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "wi"}, &c)).To(Succeed())
		return c.Spec.WorkloadServiceAccounts()
	}

	It("refuses a user without the grants when adding a ServiceAccount, admits her when removing one", func(ctx SpecContext) {
		hana, _ := userClient("hana")
		allow(ctx, ns, "hana", manageCredentials)
		Eventually(func() error {
			return patchCred(ctx, hana, ns, "wi", `{"spec":{"displayName":"WI"}}`)
		}).Should(Succeed())
		for _, body := range []string{
			`{"spec":{"workloadIdentity":{"serviceAccounts":["worker","batch"]}}}`,
			`{"spec":{"workloadIdentity":{"serviceAccounts":["batch"]}}}`,
		} {
			err := patchCred(ctx, hana, ns, "wi", body)
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%s: %v", body, err)
			Expect(err).To(MatchError(ContainSubstring(`spec.workloadIdentity.serviceAccounts: Forbidden: `)))
			Expect(err).To(MatchError(ContainSubstring(`hana may not grant apidefinitions/admin "platform-api"`)))
		}
		Expect(serviceAccounts(ctx)).To(Equal([]string{"worker"}))
		Expect(patchCred(ctx, hana, ns, "wi", `{"spec":{"workloadIdentity":null}}`)).To(Succeed())
		Expect(serviceAccounts(ctx)).To(BeEmpty())
	})

	It("admits adding a ServiceAccount from a user who holds the grants", func(ctx SpecContext) {
		ivan, _ := userClient("ivan")
		allow(ctx, ns, "ivan", manageCredentials, grantRule("platform-api", "admin"))
		Eventually(func() error {
			return patchCred(ctx, ivan, ns, "wi", `{"spec":{"workloadIdentity":{"serviceAccounts":["worker","batch"]}}}`)
		}).Should(Succeed())
		Expect(serviceAccounts(ctx)).To(ConsistOf("worker", "batch"))
	})
})
