package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func TestAppliedByGitOps(t *testing.T) {
	managers := func(names ...string) []metav1.ManagedFieldsEntry {
		var out []metav1.ManagedFieldsEntry
		for _, n := range names {
			op := metav1.ManagedFieldsOperationApply
			if strings.HasPrefix(n, "kubectl") || n == "keysmith-manager" {
				op = metav1.ManagedFieldsOperationUpdate
			}
			out = append(out, metav1.ManagedFieldsEntry{Manager: n, Operation: op})
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		meta       metav1.ObjectMeta
		tool       string
		wantGitOps bool
	}{
		{name: "Argo CD, server-side apply", meta: metav1.ObjectMeta{ManagedFields: managers("argocd-controller", "keysmith-manager")}, tool: argoCD, wantGitOps: true},
		{name: "Argo CD, client-side apply", meta: metav1.ObjectMeta{ManagedFields: managers("argocd-application-controller")}, tool: argoCD, wantGitOps: true},
		{name: "Flux Kustomization", meta: metav1.ObjectMeta{ManagedFields: managers("kustomize-controller", "keysmith-manager")}, tool: fluxKusto, wantGitOps: true},
		{name: "Flux HelmRelease", meta: metav1.ObjectMeta{ManagedFields: managers("helm-controller")}, tool: fluxHelm, wantGitOps: true},
		{name: "Argo CD tracking annotation, managed fields stripped", meta: metav1.ObjectMeta{Annotations: map[string]string{"argocd.argoproj.io/tracking-id": "team-a:iam.keysmith.dev/APICredential:team-a/ci-bot"}}, tool: argoCD, wantGitOps: true},
		{name: "Flux kustomize label", meta: metav1.ObjectMeta{Labels: map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}}, tool: fluxKusto, wantGitOps: true},
		{name: "Flux helm label", meta: metav1.ObjectMeta{Labels: map[string]string{"helm.toolkit.fluxcd.io/name": "billing"}}, tool: fluxHelm, wantGitOps: true},
		{name: "Argo CD label tracking", meta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/instance": "team-a-creds"}}, tool: argoCD, wantGitOps: true},
		{name: "Argo CD instance label (instanceLabelKey argocd.argoproj.io/instance)", meta: metav1.ObjectMeta{Labels: map[string]string{"argocd.argoproj.io/instance": "team-a-creds"}}, tool: argoCD, wantGitOps: true},
		{name: "Argo CD sync options annotation", meta: metav1.ObjectMeta{Annotations: map[string]string{"argocd.argoproj.io/sync-options": "Prune=false"}}, tool: argoCD, wantGitOps: true},
		{name: "Flux kustomize annotation", meta: metav1.ObjectMeta{Annotations: map[string]string{"kustomize.toolkit.fluxcd.io/reconcile": "enabled"}}, tool: fluxKusto, wantGitOps: true},
		{name: "Flux v1 annotation", meta: metav1.ObjectMeta{Annotations: map[string]string{"fluxcd.io/sync-checksum": "abc"}}, tool: flux, wantGitOps: true},
		{name: "a look-alike domain is not a tool's", meta: metav1.ObjectMeta{Labels: map[string]string{"notargocd.argoproj.io/x": "y", "example.com/fluxcd.io": "z"}}},
		{name: "Argo Workflows is not Argo CD", meta: metav1.ObjectMeta{Labels: map[string]string{"workflows.argoproj.io/workflow": "issue-creds"}}},
		{name: "kubectl apply, with the recommended labels of a Helm release", meta: metav1.ObjectMeta{
			ManagedFields: managers("kubectl-client-side-apply", "keysmith-manager"),
			Labels:        map[string]string{"app.kubernetes.io/instance": "billing", "app.kubernetes.io/managed-by": "Helm"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"iam.keysmith.dev/v1alpha1"}`},
		}},
		{name: "kubectl apply --server-side", meta: metav1.ObjectMeta{ManagedFields: managers("kubectl", "keysmith-manager"), Labels: map[string]string{"app.kubernetes.io/name": "ci-bot"}}},
		{name: "created with the plugin", meta: metav1.ObjectMeta{ManagedFields: managers("kubectl-keysmith", "keysmith-manager")}},
		{name: "no managed fields, no marks", meta: metav1.ObjectMeta{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{ObjectMeta: tc.meta}
			tool, ok := appliedByGitOps(cred)
			if ok != tc.wantGitOps || tool != tc.tool {
				t.Fatalf("appliedByGitOps = (%q, %v), want (%q, %v)", tool, ok, tc.tool, tc.wantGitOps)
			}
		})
	}
}

func TestGitChangeShowsTheYAMLToCommit(t *testing.T) {
	cred := fixtureCredential("team-a", "ci-bot")
	cred.ManagedFields = append(cred.ManagedFields, metav1.ManagedFieldsEntry{Manager: "kustomize-controller", Operation: metav1.ManagedFieldsOperationApply})
	got := gitChange(cred, map[string]any{"spec": map[string]any{"active": false}})
	for _, want := range []string{
		"APICredential team-a/ci-bot is applied by Flux (kustomize-controller) (field manager kustomize-controller)",
		"Make this change in Git instead:",
		"  apiVersion: iam.keysmith.dev/v1alpha1\n  kind: APICredential\n  metadata:\n    name: ci-bot\n    namespace: team-a\n  spec:\n    active: false\n",
		"--force",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("gitChange lacks %q:\n%s", want, got)
		}
	}
}

func TestRefuseGitOps(t *testing.T) {
	var out bytes.Buffer
	e := &env{streams: Streams{Out: &out}}
	cred := fixtureCredential("team-a", "ci-bot")
	if err := refuseGitOps(e, cred, map[string]any{"spec": map[string]any{"active": false}}); err != nil || out.Len() != 0 {
		t.Fatalf("a credential created with the plugin was refused: %v %q", err, out.String())
	}
	cred.Annotations = map[string]string{"argocd.argoproj.io/tracking-id": "x"}
	err := refuseGitOps(e, cred, map[string]any{"spec": map[string]any{"active": false}})
	if err == nil || !strings.Contains(err.Error(), `credential "ci-bot" is applied by Argo CD, so it was not changed: make the change above in Git, or pass --force`) {
		t.Fatalf("refusal = %v", err)
	}
	if !strings.Contains(out.String(), "    active: false") {
		t.Fatalf("the Git change was not printed: %q", out.String())
	}
}

// argoCDAppliesMeanwhile is a fake API server on which Argo CD applies the credential
// (its instance label) just before the plugin's first patch or delete arrives: the
// GitOps rule was checked on the version before.
func argoCDAppliesMeanwhile(t *testing.T) *interceptor.Funcs {
	var once sync.Once
	apply := func(ctx context.Context, c client.WithWatch, obj client.Object) {
		once.Do(func() {
			live := &iamv1alpha1.APICredential{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
				t.Fatal(err)
			}
			live.Labels = map[string]string{"argocd.argoproj.io/instance": "team-a-creds"}
			if err := c.Update(ctx, live); err != nil {
				t.Fatal(err)
			}
		})
	}
	return &interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			apply(ctx, c, obj)
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			apply(ctx, c, obj)
			return c.Delete(ctx, obj, opts...)
		},
	}
}

// A credential that Argo CD applies between the plugin's read and its write is not
// changed: the write is bound to the version the GitOps rule was checked on.
func TestGitOpsRuleHoldsWhenTheToolAppliesMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(*env) *cobra.Command
		args  []string
	}{
		{"deactivate", newDeactivateCommand, []string{"ci-bot"}},
		{"rotate", newRotateCommand, []string{"ci-bot"}},
		{"delete", newDeleteCommand, []string{"ci-bot", "--confirm", "ci-bot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, secret := issuedCred("ci-bot", 1)
			h := newOpsHarness(t, argoCDAppliesMeanwhile(t), cred, secret)
			err := h.run(tc.build, tc.args...)
			if err == nil {
				t.Fatalf("%s succeeded on a credential Argo CD applied meanwhile", tc.name)
			}
			got, getErr := h.credential("ci-bot")
			if getErr != nil {
				t.Fatalf("the credential is gone: %v (err %v)", getErr, err)
			}
			if !got.Spec.IsActive() || got.Spec.Rotation.KeyVersion != 1 {
				t.Errorf("changed live: %+v (err %v)", got.Spec, err)
			}
		})
	}
}

// A token server's usage write between delete's checks and its delete (the precondition
// conflicts) does not stop the deletion: the credential is checked again and deleted.
func TestDeleteRetriesOverAUsageWrite(t *testing.T) {
	var once sync.Once
	funcs := &interceptor.Funcs{Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		once.Do(func() {
			live := &iamv1alpha1.APICredential{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
				t.Fatal(err)
			}
			live.Status.LastUsedAddress = "10.0.0.9"
			if err := c.Status().Update(ctx, live); err != nil {
				t.Fatal(err)
			}
		})
		return c.Delete(ctx, obj, opts...)
	}}
	cred, secret := issuedCred("ci-bot", 1)
	h := newOpsHarness(t, funcs, cred, secret)
	if err := h.run(newDeleteCommand, "ci-bot", "--confirm", "ci-bot"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := h.credential("ci-bot"); !apierrors.IsNotFound(err) {
		t.Errorf("not deleted: get = %v", err)
	}
}
