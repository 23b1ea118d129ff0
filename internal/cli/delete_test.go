package cli

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// fluxApplied marks a credential as applied by Flux's kustomize-controller, as its
// managedFields show it.
func fluxApplied(cred *iamv1alpha1.APICredential) {
	cred.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kustomize-controller", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "iam.keysmith.dev/v1alpha1",
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:apis":{}}}`)}}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name     string
		terminal bool
		typed    string
		args     []string
		mutate   func(*iamv1alpha1.APICredential)
		wantErr  string
		wantOut  string
		deleted  bool
	}{
		{name: "no terminal, no --confirm", wantErr: `delete needs the name confirmed, and stdin is not a terminal, so credential "ci-bot" was not deleted: pass --confirm ci-bot`},
		{name: "--confirm NAME", args: []string{"--confirm", "ci-bot"}, deleted: true,
			wantOut: "apicredential team-a/ci-bot deleted: token servers refuse it and its tokens; its Secret team-a/ci-bot is deleted with it (owner reference)"},
		{name: "--confirm another name", args: []string{"--confirm", "ci-bo"}, wantErr: `--confirm "ci-bo" does not match the credential's name "ci-bot", so nothing was deleted`},
		{name: "terminal, name typed", terminal: true, typed: "ci-bot\n", deleted: true, wantOut: "Type the credential's name to confirm: "},
		{name: "terminal, name typed with CRLF", terminal: true, typed: "ci-bot\r\n", deleted: true},
		{name: "terminal, another name typed", terminal: true, typed: "ci\n", wantErr: `"ci" does not match the credential's name "ci-bot", so nothing was deleted`},
		{name: "terminal, nothing typed", terminal: true, typed: "", wantErr: "no name was typed, so nothing was deleted"},
		{name: "deletionProtection", args: []string{"--confirm", "ci-bot"},
			mutate:  func(c *iamv1alpha1.APICredential) { c.Spec.DeletionProtection = true },
			wantErr: `credential "ci-bot" in namespace "team-a" has spec.deletionProtection=true, so it was not deleted: first set spec.deletionProtection to false with kubectl edit apicredential ci-bot -n team-a, then run delete again`},
		{name: "deletionProtection, GitOps", args: []string{"--confirm", "ci-bot", "--force"},
			mutate:  func(c *iamv1alpha1.APICredential) { c.Spec.DeletionProtection = true; fluxApplied(c) },
			wantErr: "first set spec.deletionProtection to false in Git (Flux (kustomize-controller) applies it), and let it sync, then run delete again"},
		{name: "GitOps without --force", args: []string{"--confirm", "ci-bot"}, mutate: fluxApplied,
			wantErr: `credential "ci-bot" is applied by Flux (kustomize-controller), so it was not deleted: remove it from Git as shown above, or pass --force`,
			wantOut: "Delete it in Git instead: remove this object from the repository and let Flux (kustomize-controller) prune it"},
		{name: "GitOps with --force", args: []string{"--confirm", "ci-bot", "--force"}, mutate: fluxApplied, deleted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mutate []func(*iamv1alpha1.APICredential)
			if tt.mutate != nil {
				mutate = append(mutate, tt.mutate)
			}
			cred, secret := issuedCred("ci-bot", 0, mutate...)
			h := newOpsHarness(t, nil, cred, secret)
			h.e.terminal = func(any) bool { return tt.terminal }
			h.in.WriteString(tt.typed)
			err := h.run(newDeleteCommand, append([]string{"ci-bot"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("delete: %v", err)
			}
			if !strings.Contains(h.out.String(), tt.wantOut) {
				t.Errorf("output does not contain %q:\n%s", tt.wantOut, h.out)
			}
			_, getErr := h.credential("ci-bot")
			if gone := apierrors.IsNotFound(getErr); gone != tt.deleted {
				t.Errorf("deleted = %t, want %t (get: %v)", gone, tt.deleted, getErr)
			}
		})
	}
}
