package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// The lifecycle commands write with a JSON merge patch of only the fields they change
// (spec.rotation.keyVersion and gracePeriod, spec.active), not with server-side apply: an
// apply by kubectl-keysmith would take co-ownership of those fields from the person's or
// the GitOps tool's apply, and a later apply without them would then remove them. A
// merge patch changes the value and leaves ownership to the next apply, as kubectl patch
// does. rotate adds the resourceVersion precondition, so two rotations that read the
// same keyVersion do not both write N+1: the second conflicts, reads again and writes N+2.

func init() {
	registerCommand(newRotateCommand)
	registerCommand(newDeactivateCommand)
	registerCommand(newActivateCommand)
}

// defaultTimeout is how long create, rotate, activate and deactivate wait for the
// operator by default.
const defaultTimeout = 30 * time.Second

// rotateOptions are the flags of `rotate`.
type rotateOptions struct {
	grace      string
	showSecret bool
	timeout    time.Duration
	force      bool
}

func newRotateCommand(e *env) *cobra.Command {
	o := &rotateOptions{}
	cmd := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Issue new keys: a new secret into the same Secret, the previous one kept for a grace period",
		Long: `Issue new keys for a credential: rotate raises spec.rotation.keyVersion by one, waits
until the operator has written the new secret into the credential's Secret, and prints
until when the previous secret keeps working (spec.rotation.gracePeriod, default 1h;
--grace sets it). The client ID stays. Workloads that mount the Secret pick up the new
secret; restart them within the grace period.

A credential applied by Argo CD or Flux is not rotated live without --force: rotate
prints the change to make in Git instead (a live keyVersion bump would wedge the next
sync, since keyVersion cannot decrease).`,
		Example: `  # Rotate, keeping the previous secret for the default grace period
  kubectl keysmith rotate ci-bot -n team-a

  # Rotate, keep the previous secret for 10 minutes, and print the new secret
  kubectl keysmith rotate ci-bot --grace 10m --show-secret

  # Revoke the previous secret at once (a leaked secret)
  kubectl keysmith rotate ci-bot --grace 0s`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.rotate(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.grace, "grace", "", "How long the previous secret keeps working, written to spec.rotation.gracePeriod (0s to 720h; 0s revokes it at once)")
	f.BoolVar(&o.showSecret, "show-secret", false, "Print the new client secret (read from the Secret: you need get on it)")
	f.DurationVar(&o.timeout, "timeout", defaultTimeout, "How long to wait for the operator to issue the new keys")
	f.BoolVar(&o.force, "force", false, "Rotate a credential applied by Argo CD or Flux live (then raise keyVersion in Git too, to at least the new value)")
	return cmd
}

func (e *env) rotate(ctx context.Context, name string, o *rotateOptions) error {
	grace, err := parseGrace(o.grace)
	if err != nil {
		return err
	}
	ns, err := e.Namespace()
	if err != nil {
		return err
	}
	c, err := e.Client()
	if err != nil {
		return err
	}
	var target int64
	var cred *iamv1alpha1.APICredential
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cred, err = e.getCredential(ctx, ns, name)
		if err != nil {
			return err
		}
		target = cred.Spec.Rotation.KeyVersion + 1
		if err := e.gitOpsRotation(cred, target, grace, o.force); err != nil {
			return err
		}
		before := cred.DeepCopy()
		cred.Spec.Rotation.KeyVersion = target
		if grace != nil {
			cred.Spec.Rotation.GracePeriod = grace
		}
		return c.Patch(ctx, cred, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	})
	if err != nil {
		return kubeError(err, fmt.Sprintf("rotate credential %q in namespace %q", name, ns))
	}
	issued, err := waitForCredential(ctx, c, ns, name, o.timeout, func(cr *iamv1alpha1.APICredential) (bool, error) {
		if cr.Status.KeyVersion >= target {
			return true, nil
		}
		return false, stalled(cr, "rotated")
	})
	if errors.Is(err, errWaitTimeout) {
		return userError(fmt.Sprintf("spec.rotation.keyVersion of credential %q is now %d, but the operator has not issued it within %s: %s", name, target, o.timeout, describeState(issued)),
			fmt.Sprintf("see '%s status %s'; wait longer with --timeout", commandName, name))
	}
	if err != nil {
		return kubeError(err, fmt.Sprintf("wait for credential %q to be rotated", name))
	}
	return e.printRotated(ctx, c, issued, o.showSecret, o.timeout)
}

// gitOpsRotation applies the GitOps rule to a rotation of cred to keyVersion target: a
// credential applied by Argo CD or Flux is not rotated live without force. The
// explanation is rotate's own: Git still holds the old keyVersion, which the next sync
// would try to write back, and the API server refuses a decrease, so every later sync
// would fail until Git is raised too. With force it warns of exactly that.
func (e *env) gitOpsRotation(cred *iamv1alpha1.APICredential, target int64, grace *metav1.Duration, force bool) error {
	tool, ok := appliedByGitOps(cred)
	if !ok {
		return nil
	}
	wedge := fmt.Sprintf("Rotating live would raise spec.rotation.keyVersion to %d while Git says %d: the next sync would set it back, which is refused (keyVersion cannot decrease), so every sync of %s would fail until Git is raised too.",
		target, cred.Spec.Rotation.KeyVersion, tool)
	if force {
		_, _ = fmt.Fprintf(e.errOut(), "warning: credential %q is applied by %s and rotated live: raise spec.rotation.keyVersion in Git to at least %d now, or the next sync fails (keyVersion cannot decrease)\n", cred.Name, tool, target)
		return nil
	}
	_, _ = fmt.Fprintln(e.out(), wedge)
	return refuseGitOps(e, cred, rotateChange(target, grace))
}

// rotateChange is the Git change of a rotation: the new keyVersion, and the grace period
// when --grace was given.
func rotateChange(keyVersion int64, grace *metav1.Duration) map[string]any {
	rotation := map[string]any{"keyVersion": keyVersion}
	if grace != nil {
		rotation["gracePeriod"] = grace.Duration.String()
	}
	return map[string]any{"spec": map[string]any{"rotation": rotation}}
}

// printRotated says what the rotation did: the new key version, until when the previous
// secret works, and, with --show-secret, the new secret from the Secret.
func (e *env) printRotated(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential, showSecret bool, timeout time.Duration) error {
	now := e.clock.Now()
	out := e.out()
	fmt.Fprintf(out, "apicredential %s/%s rotated: key version %d issued\n", cred.Namespace, cred.Name, cred.Status.KeyVersion)
	fmt.Fprintln(out, previousSecretLine(cred, now))
	secret := cred.Namespace + "/" + secretName(cred)
	if !showSecret {
		_, err := fmt.Fprintf(out, "The new secret is in Secret %s, where the workloads that mount it find it (--show-secret prints it).\n", secret)
		return err
	}
	ic, err := waitIssuedSecret(ctx, c, cred, "rotate --show-secret", timeout)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "\nClient ID:      %s\nClient secret:  %s\n\nThe new secret is stored in Secret %s.\n", ic.ClientID, ic.ClientSecret, secret)
	return err
}

// previousSecretLine says until when the secret replaced by the latest rotation works.
func previousSecretLine(cred *iamv1alpha1.APICredential, now time.Time) string {
	// With a zero grace period the replaced secret is not kept, and previousSecrets[0], if
	// any, is one replaced by an earlier rotation.
	if g := cred.Spec.Rotation.GracePeriod; g != nil && g.Duration == 0 {
		return "The previous secret stopped working at once (grace period 0s)."
	}
	if len(cred.Status.PreviousSecrets) == 0 {
		return "The previous secret no longer works (no grace period)."
	}
	end := cred.Status.PreviousSecrets[0].ExpiresAt.Time
	if !end.After(now) {
		return fmt.Sprintf("The previous secret stopped working at %s.", end.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("The previous secret keeps working until %s (in %s): restart the workloads that use it before then.",
		end.UTC().Format(time.RFC3339), duration.HumanDuration(end.Sub(now)))
}

// waitIssuedSecret waits until cred's Secret holds the secret status records and returns
// what it holds. The operator writes the Secret before status, so this normally holds at
// once; a Secret the user may not read fails at once.
func waitIssuedSecret(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential, verb string, timeout time.Duration) (issuedCredential, error) {
	deadline := time.Now().Add(timeout)
	for {
		ic, ok, err := readIssued(ctx, c, cred, verb)
		if err != nil {
			return issuedCredential{}, err
		}
		if ok {
			return ic, nil
		}
		if time.Now().After(deadline) {
			return issuedCredential{}, userError(fmt.Sprintf("credential %q is issued, but its Secret %s/%s does not hold the issued secret after %s", cred.Name, cred.Namespace, secretName(cred), timeout),
				fmt.Sprintf("see '%s status %s' (SecretMissing or SecretModified: rotate issues new keys)", commandName, cred.Name))
		}
		select {
		case <-ctx.Done():
			return issuedCredential{}, kubeError(ctx.Err(), "wait for the Secret of credential "+fmt.Sprintf("%q", cred.Name))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stalled fails a wait when the credential reports that a person must act.
func stalled(cred *iamv1alpha1.APICredential, doing string) error {
	st := apimeta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionStalled)
	if st == nil || st.Status != metav1.ConditionTrue || st.ObservedGeneration < cred.Generation {
		return nil
	}
	return userError(fmt.Sprintf("credential %q was %s, but the operator reports %s: %s", cred.Name, doing, st.Reason, st.Message),
		fmt.Sprintf("see '%s status %s'", commandName, cred.Name))
}

// activeOptions are the flags of `activate` and `deactivate`.
type activeOptions struct {
	timeout time.Duration
	force   bool
}

func newDeactivateCommand(e *env) *cobra.Command {
	o := &activeOptions{}
	cmd := &cobra.Command{
		Use:   "deactivate NAME",
		Short: "Deactivate a credential: token servers refuse it and its tokens at once (reversible)",
		Long: `Deactivate a credential: set spec.active to false. Token servers refuse it within a
second, including access tokens issued earlier; the client ID and secret are kept, and
'activate' makes them work again. Deactivating needs no grants.

A credential applied by Argo CD or Flux is not changed live without --force: the
command prints the change to make in Git instead (the next sync would revert it).`,
		Example: `  # Stop a credential now
  kubectl keysmith deactivate ci-bot -n team-a`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.setActive(cmd.Context(), args[0], false, o)
		},
	}
	o.addFlags(cmd, "deactivated")
	return cmd
}

func newActivateCommand(e *env) *cobra.Command {
	o := &activeOptions{}
	cmd := &cobra.Command{
		Use:   "activate NAME",
		Short: "Activate a deactivated credential: its keys work again",
		Long: `Activate a credential: set spec.active back to true, so token servers accept its
client ID and secret again. Reactivating makes a credential more powerful, so it needs
the same grants as creating it (RBAC verb grant on each of its API permissions):
admission refuses it otherwise, and its message is printed unchanged.

A credential applied by Argo CD or Flux is not changed live without --force: the
command prints the change to make in Git instead (the next sync would revert it).`,
		Example: `  # Let a deactivated credential work again
  kubectl keysmith activate ci-bot -n team-a`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.setActive(cmd.Context(), args[0], true, o)
		},
	}
	o.addFlags(cmd, "activated")
	return cmd
}

func (o *activeOptions) addFlags(cmd *cobra.Command, done string) {
	cmd.Flags().DurationVar(&o.timeout, "timeout", defaultTimeout, "How long to wait for the operator to report the credential "+done)
	cmd.Flags().BoolVar(&o.force, "force", false, "Change a credential applied by Argo CD or Flux live (the next sync reverts it unless Git is changed too)")
}

// setActive patches spec.active and waits until the operator's Active condition reflects
// it for the new generation.
func (e *env) setActive(ctx context.Context, name string, active bool, o *activeOptions) error {
	verb, done := "deactivate", "deactivated"
	if active {
		verb, done = "activate", "activated"
	}
	ns, err := e.Namespace()
	if err != nil {
		return err
	}
	c, err := e.Client()
	if err != nil {
		return err
	}
	// The GitOps rule is decided on the version that is patched: the optimistic lock
	// makes an apply by Argo CD or Flux between the read and the patch a conflict, and the
	// retry decides again on what it applied.
	var cred *iamv1alpha1.APICredential
	already := false
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cred, err = e.getCredential(ctx, ns, name)
		if err != nil {
			return err
		}
		if already = cred.Spec.IsActive() == active; already {
			return nil
		}
		if tool, ok := appliedByGitOps(cred); ok && o.force {
			_, _ = fmt.Fprintf(e.errOut(), "warning: credential %q is applied by %s: the next sync sets spec.active back to %t unless Git says %t too\n", name, tool, !active, active)
		} else if err := refuseGitOps(e, cred, map[string]any{"spec": map[string]any{"active": active}}); err != nil {
			return err
		}
		before := cred.DeepCopy()
		cred.Spec.Active = &active
		return c.Patch(ctx, cred, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return userError(fmt.Sprintf("credential %q in namespace %q was deleted meanwhile", name, ns), "")
		}
		return kubeError(err, fmt.Sprintf("%s credential %q in namespace %q", verb, name, ns))
	}
	if already {
		_, err := fmt.Fprintf(e.out(), "apicredential %s/%s is already %s: nothing changed\n", ns, name, map[bool]string{true: "active", false: "inactive"}[active])
		return err
	}
	generation := cred.Generation
	seen, err := waitForCredential(ctx, c, ns, name, o.timeout, func(cr *iamv1alpha1.APICredential) (bool, error) {
		if cr.Status.ObservedGeneration < generation {
			return false, nil
		}
		return apimeta.FindStatusCondition(cr.Status.Conditions, iamv1alpha1.ConditionActive) != nil, stalled(cr, done)
	})
	if errors.Is(err, errWaitTimeout) {
		return userError(fmt.Sprintf("credential %q was %s (spec.active=%t), but the operator has not reported it within %s: %s", name, done, active, o.timeout, describeState(seen)),
			fmt.Sprintf("token servers read spec.active themselves; see '%s status %s'", commandName, name))
	}
	if err != nil {
		return kubeError(err, fmt.Sprintf("wait for credential %q to be %s", name, done))
	}
	return printActive(e, seen, active)
}

// printActive reports the Active condition after activate or deactivate; an activated
// credential that token servers still refuse (expired) is a failure.
func printActive(e *env, cred *iamv1alpha1.APICredential, active bool) error {
	a := apimeta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionActive)
	id := cred.Namespace + "/" + cred.Name
	if !active {
		_, err := fmt.Fprintf(e.out(), "apicredential %s deactivated: token servers refuse it and the tokens it was issued (Active=%s, %s); '%s activate %s' reverses it\n",
			id, a.Status, a.Reason, commandName, cred.Name)
		return err
	}
	if a.Status == metav1.ConditionTrue {
		_, err := fmt.Fprintf(e.out(), "apicredential %s activated: token servers accept its keys again (Active=True)\n", id)
		return err
	}
	return userError(fmt.Sprintf("credential %q was activated, but token servers still refuse it: Active=%s (%s): %s", cred.Name, a.Status, a.Reason, a.Message),
		fmt.Sprintf("see '%s status %s'", commandName, cred.Name))
}
