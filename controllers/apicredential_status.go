package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// readiness is the outcome of the status chain: the Ready condition to show and whether
// only a person can make progress (Stalled).
type readiness struct {
	status  metav1.ConditionStatus
	reason  string
	message string
	stalled bool
}

// readinessFacts are what the reconciler observed; computeReadiness needs nothing else.
type readinessFacts struct {
	// invalidSpec is the catalog or scope problem found in the spec, if any.
	invalidSpec error
	// secret is the state of the credential's Secret after this reconcile's actions.
	secret secretState
	// secretName is the name of the credential's Secret.
	secretName string
}

// computeReadiness decides the Ready condition with a chain where the first reason wins:
// InvalidSpec, Inactive, Expired, a Secret problem, Issued. It is a pure function of the
// spec, the status, the facts and the time.
func computeReadiness(cred *iamv1alpha1.APICredential, f readinessFacts, now time.Time) readiness {
	switch {
	case f.invalidSpec != nil:
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonInvalidSpec, f.invalidSpec.Error(), true}
	case !cred.Spec.IsActive():
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonInactive,
			"spec.active is false: token servers refuse this credential", false}
	case cred.Spec.ExpiresAt != nil && !now.Before(cred.Spec.ExpiresAt.Time):
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonExpired,
			fmt.Sprintf("spec.expiresAt (%s) has passed: token servers refuse this credential",
				cred.Spec.ExpiresAt.UTC().Format(time.RFC3339)), false}
	case f.secret == secretMissing:
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonSecretMissing,
			fmt.Sprintf("Secret %q was deleted: clients that hold the secret keep working; "+
				"increase spec.rotation.keyVersion to issue new keys", f.secretName), true}
	case f.secret == secretModified:
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonSecretModified,
			fmt.Sprintf("the credential data in Secret %q does not match the issued secret and is not rewritten; "+
				"increase spec.rotation.keyVersion to issue new keys", f.secretName), true}
	case f.secret == secretUnbound:
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonSecretModified,
			fmt.Sprintf("the credential data in Secret %q does not carry this operator's binding and is not adopted "+
				"(a Secret writer must not choose the secret or the client ID); if the Secret was restored from a backup "+
				"without the binding key Secret, someone who holds this credential's grants can annotate the APICredential "+
				"with %s=true to bind it; otherwise increase spec.rotation.keyVersion to issue new keys (a new client ID)",
				f.secretName, iamv1alpha1.RebindAnnotation), true}
	case f.secret == secretClientIDTaken:
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonSecretConflict,
			fmt.Sprintf("the client ID in Secret %q is held by another APICredential and is not adopted: "+
				"a client ID belongs to one credential", f.secretName), true}
	case f.secret == secretConflict:
		return readiness{metav1.ConditionFalse, iamv1alpha1.ReasonSecretConflict,
			fmt.Sprintf("Secret %q exists and is not owned by this APICredential: delete or rename it, "+
				"or recreate this APICredential with another spec.secretTemplate.name", f.secretName), true}
	case cred.Status.SecretHash == "":
		return readiness{metav1.ConditionUnknown, iamv1alpha1.ReasonProgressing, "issuing the secret", false}
	default:
		return readiness{metav1.ConditionTrue, iamv1alpha1.ReasonIssued,
			fmt.Sprintf("client secret issued into Secret %q", f.secretName), false}
	}
}

// applyReadiness writes the kstatus conditions for r: Ready always, Stalled only while
// true, Reconciling only while work is in flight (Ready=Unknown).
func applyReadiness(cred *iamv1alpha1.APICredential, r readiness) {
	gen := cred.Generation
	conds := &cred.Status.Conditions
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: iamv1alpha1.ConditionReady, Status: r.status, Reason: r.reason, Message: r.message, ObservedGeneration: gen,
	})
	setOnlyWhileTrue(conds, iamv1alpha1.ConditionStalled, r.stalled, r.reason, r.message, gen)
	setOnlyWhileTrue(conds, iamv1alpha1.ConditionReconciling, r.status == metav1.ConditionUnknown, r.reason, r.message, gen)
	cred.Status.ObservedGeneration = gen
}

func setOnlyWhileTrue(conds *[]metav1.Condition, condType string, on bool, reason, message string, gen int64) {
	if !on {
		meta.RemoveStatusCondition(conds, condType)
		return
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: condType, Status: metav1.ConditionTrue, Reason: reason, Message: message, ObservedGeneration: gen,
	})
}

// readyMessage returns the message of the Ready condition, or "" when there is none.
func readyMessage(cred *iamv1alpha1.APICredential) string {
	if c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}

// readyReason returns the reason of the Ready condition, or "" when there is none.
func readyReason(cred *iamv1alpha1.APICredential) string {
	if c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// pruneExpiredSecrets drops previous secrets whose grace period has ended.
func pruneExpiredSecrets(cred *iamv1alpha1.APICredential, now time.Time) {
	kept := cred.Status.PreviousSecrets[:0]
	for _, p := range cred.Status.PreviousSecrets {
		if p.ExpiresAt.After(now) {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	cred.Status.PreviousSecrets = kept
}

// nextDeadline returns the earliest future moment at which the credential's state changes
// by itself: a grace period ending, the expiry, or an automatic rotation falling due.
// ok is false when there is none, so the reconciler waits for events instead of polling.
func nextDeadline(cred *iamv1alpha1.APICredential, now time.Time) (deadline time.Time, ok bool) {
	consider := func(t time.Time) {
		if t.After(now) && (!ok || t.Before(deadline)) {
			deadline, ok = t, true
		}
	}
	for _, p := range cred.Status.PreviousSecrets {
		consider(p.ExpiresAt.Time)
	}
	if cred.Spec.ExpiresAt != nil {
		consider(cred.Spec.ExpiresAt.Time)
	}
	if p := cred.Spec.Rotation.Period; p != nil && cred.Status.IssuedAt != nil {
		consider(cred.Status.IssuedAt.Add(p.Duration))
	}
	return deadline, ok
}
