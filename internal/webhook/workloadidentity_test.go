package webhook

import (
	"testing"

	. "github.com/onsi/gomega"

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
