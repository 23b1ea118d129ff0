package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func init() { registerCommand(newDeleteCommand) }

// deleteOptions are the flags of `delete`.
type deleteOptions struct {
	confirm string
	force   bool
}

func newDeleteCommand(e *env) *cobra.Command {
	o := &deleteOptions{}
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a credential and its Secret, after typing its name again",
		Long: `Delete an APICredential. Token servers refuse it within a second, including the
access tokens it was issued; its Secret is deleted with it by garbage collection (the
operator made the credential its owner).

On a terminal, delete asks for the credential's name to be typed again. Without a
terminal (scripts, CI) it needs --confirm NAME instead. A credential with
spec.deletionProtection=true is refused: set it to false first (in Git if Argo CD or
Flux applies the credential), then delete. A credential applied by Argo CD or Flux
is deleted only with --force (remove it from Git instead, and let the tool prune it).`,
		Example: `  # Delete on a terminal: asks for the name again
  kubectl keysmith delete ci-bot -n team-a

  # In a script
  kubectl keysmith delete ci-bot -n team-a --confirm ci-bot`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.deleteCredential(cmd.Context(), args[0], o)
		},
	}
	cmd.Flags().StringVar(&o.confirm, "confirm", "", "The credential's name again, to delete without a terminal")
	cmd.Flags().BoolVar(&o.force, "force", false, "Delete a credential applied by Argo CD or Flux (the tool recreates it unless it is removed from Git)")
	return cmd
}

func (e *env) deleteCredential(ctx context.Context, name string, o *deleteOptions) error {
	ns, err := e.Namespace()
	if err != nil {
		return err
	}
	cred, err := e.getCredential(ctx, ns, name)
	if err != nil {
		return err
	}
	if err := e.refuseDeletion(cred, o.force, true); err != nil {
		return err
	}
	if err := e.confirmDeletion(name, o.confirm); err != nil {
		return err
	}
	c, err := e.Client()
	if err != nil {
		return err
	}
	// The preconditions delete the credential that was checked: not one recreated under
	// the same name meanwhile (UID), nor one changed since the checks (resourceVersion),
	// e.g. applied by Argo CD or Flux or given deletionProtection. A change (a token
	// server's usage write, most often) is checked again before the next attempt.
	uid := cred.UID
	replaced := false
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		err := c.Delete(ctx, cred, client.Preconditions{UID: &uid, ResourceVersion: &cred.ResourceVersion}, client.PropagationPolicy("Background"))
		if !apierrors.IsConflict(err) {
			return err
		}
		live, gerr := e.getCredential(ctx, ns, name)
		if gerr != nil {
			return gerr
		}
		if replaced = live.UID != uid; replaced {
			return err
		}
		if rerr := e.refuseDeletion(live, o.force, false); rerr != nil {
			return rerr
		}
		cred = live
		return err
	})
	if apierrors.IsNotFound(err) {
		return userError(fmt.Sprintf("credential %q in namespace %q was deleted meanwhile", name, ns), "")
	}
	if apierrors.IsConflict(err) && replaced {
		return userError(fmt.Sprintf("credential %q in namespace %q was replaced while deleting", name, ns), "run delete again to delete the new one")
	}
	if err != nil {
		return kubeError(err, fmt.Sprintf("delete credential %q in namespace %q", name, ns))
	}
	_, err = fmt.Fprintf(e.out(), "apicredential %s/%s deleted: token servers refuse it and its tokens; its Secret %s/%s is deleted with it (owner reference)\n",
		ns, name, ns, secretName(cred))
	return err
}

// refuseDeletion applies deletionProtection and the GitOps rule to cred: without force a
// credential applied by Argo CD or Flux is not deleted, and the Git change is printed;
// with force, warn says whether to warn that the tool creates it again.
func (e *env) refuseDeletion(cred *iamv1alpha1.APICredential, force, warn bool) error {
	if err := refuseProtected(cred); err != nil {
		return err
	}
	tool, evidence, ok := gitopsEvidence(cred)
	switch {
	case !ok:
	case !force:
		_, _ = fmt.Fprint(e.out(), gitDeletion(cred, tool, evidence))
		return userError(fmt.Sprintf("credential %q is applied by %s, so it was not deleted", cred.Name, tool),
			"remove it from Git as shown above, or pass --force")
	case warn:
		_, _ = fmt.Fprintf(e.errOut(), "warning: credential %q is applied by %s: unless it is removed from Git, the next sync creates it again, with a new client ID and secret\n", cred.Name, tool)
	}
	return nil
}

// gitDeletion tells a person how to delete a credential that tool applies: remove its
// manifest from Git and let the tool prune it. A live delete would be undone by the next
// sync, which creates a new credential with a new client ID and secret.
func gitDeletion(cred *iamv1alpha1.APICredential, tool, evidence string) string {
	return fmt.Sprintf(`APICredential %s/%s is applied by %s (%s): deleted live, it would be created again by the next sync, with a new client ID and secret.
Delete it in Git instead: remove this object from the repository and let %s prune it (pruning must be on):

  apiVersion: %s
  kind: APICredential
  metadata:
    name: %s
    namespace: %s

or run delete again with --force to delete it live.
`, cred.Namespace, cred.Name, tool, evidence, tool, iamv1alpha1.GroupVersion.String(), cred.Name, cred.Namespace)
}

// refuseProtected refuses, before calling the API, to delete a credential whose
// spec.deletionProtection is true, saying the two steps that delete it.
func refuseProtected(cred *iamv1alpha1.APICredential) error {
	if !cred.Spec.DeletionProtection {
		return nil
	}
	where := "with kubectl edit apicredential " + cred.Name + " -n " + cred.Namespace
	if tool, ok := appliedByGitOps(cred); ok {
		where = "in Git (" + tool + " applies it), and let it sync"
	}
	return userError(fmt.Sprintf("credential %q in namespace %q has spec.deletionProtection=true, so it was not deleted", cred.Name, cred.Namespace),
		fmt.Sprintf("first set spec.deletionProtection to false %s, then run delete again", where))
}

// confirmDeletion asks for the name to be typed again on a terminal, unless --confirm
// gives it; without a terminal --confirm is required. A mismatch aborts.
func (e *env) confirmDeletion(name, confirm string) error {
	if confirm != "" {
		if confirm != name {
			return userError(fmt.Sprintf("--confirm %q does not match the credential's name %q, so nothing was deleted", confirm, name), "pass --confirm "+name)
		}
		return nil
	}
	if !e.isTerminal(e.in()) {
		return userError(fmt.Sprintf("delete needs the name confirmed, and stdin is not a terminal, so credential %q was not deleted", name),
			"pass --confirm "+name)
	}
	typed, err := prompt(e.in(), e.out(), fmt.Sprintf("Deleting credential %q revokes its secret and every token it was issued, and deletes its Secret.\nType the credential's name to confirm: ", name))
	if err != nil {
		return userError("no name was typed, so nothing was deleted", "run delete again, or pass --confirm "+name)
	}
	if typed != name {
		return userError(fmt.Sprintf("%q does not match the credential's name %q, so nothing was deleted", typed, name), "run delete again and type "+name)
	}
	return nil
}

// prompt writes question and reads one line of answer, without its line ending.
func prompt(in io.Reader, out io.Writer, question string) (string, error) {
	if _, err := fmt.Fprint(out, question); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
