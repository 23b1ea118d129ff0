package controllers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// verdict is the status, reason and message of one condition.
type verdict struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

// readiness is the outcome of the status chain: the Ready and Active conditions to show,
// whether only a person can make progress (Stalled), and whether the reconcile could not
// finish (Reconciling).
type readiness struct {
	ready       verdict
	active      verdict
	stalled     bool
	reconciling bool
}

// readinessFacts are what the reconciler observed; computeReadiness needs nothing else.
type readinessFacts struct {
	// invalidSpec is the catalog or scope problem found in the spec, if any.
	invalidSpec error
	// unfinished is the error that kept this reconcile from finishing, if any: a
	// transient error, or the manager's cache found behind the API server.
	unfinished error
	// secret is the state of the credential's Secret after this reconcile's actions.
	secret secretState
	// secretName is the name of the credential's Secret.
	secretName string
}

// maxConditionMessage bounds the error text copied into a condition's message.
const maxConditionMessage = 1024

// computeReadiness decides the conditions. Ready follows a chain where the first reason
// wins, person-must-act reasons first (DESIGN §1): InvalidSpec, then a reconcile that
// could not finish (Retrying, Progressing), SecretConflict, SecretModified,
// SecretMissing, Inactive, Expired, Issued. Inactive and Expired are the declared state
// in effect (Ready=True); Active says what token servers do. It is a pure function of the
// spec, the status, the facts and the time.
func computeReadiness(cred *iamv1alpha1.APICredential, f readinessFacts, now time.Time) readiness {
	rd := readiness{active: computeActive(cred, now)}
	mustAct := func(reason, message string) readiness {
		rd.ready, rd.stalled = verdict{metav1.ConditionFalse, reason, message}, true
		return rd
	}
	inFlight := func(reason, message string) readiness {
		rd.ready, rd.reconciling = verdict{metav1.ConditionUnknown, reason, message}, true
		return rd
	}
	switch {
	case f.invalidSpec != nil:
		return mustAct(iamv1alpha1.ReasonInvalidSpec, f.invalidSpec.Error())
	case f.unfinished != nil:
		reason := iamv1alpha1.ReasonRetrying
		if errors.Is(f.unfinished, errCacheBehind) {
			reason = iamv1alpha1.ReasonProgressing
		}
		return inFlight(reason, truncate(f.unfinished.Error(), maxConditionMessage))
	case f.secret == secretClientIDTaken:
		return mustAct(iamv1alpha1.ReasonSecretConflict,
			fmt.Sprintf("the client ID in Secret %q is held by another APICredential and is not adopted: "+
				"a client ID belongs to one credential", f.secretName))
	case f.secret == secretConflict:
		return mustAct(iamv1alpha1.ReasonSecretConflict,
			fmt.Sprintf("Secret %q exists and is not owned by this APICredential: delete or rename it, "+
				"or recreate this APICredential with another spec.secretTemplate.name", f.secretName))
	case f.secret == secretModified:
		return mustAct(iamv1alpha1.ReasonSecretModified,
			fmt.Sprintf("the credential data in Secret %q does not match the issued secret and is not rewritten; "+
				"increase spec.rotation.keyVersion to issue new keys", f.secretName))
	case f.secret == secretUnbound:
		return mustAct(iamv1alpha1.ReasonSecretModified,
			fmt.Sprintf("the credential data in Secret %q does not carry this operator's binding and is not adopted "+
				"(a Secret writer must not choose the secret or the client ID); if the Secret was restored from a backup "+
				"without the binding key Secret, someone who holds this credential's grants and the rebind verb (keysmith-admin) can annotate the APICredential "+
				"with %s=true to bind it; otherwise increase spec.rotation.keyVersion to issue new keys (a new client ID)",
				f.secretName, iamv1alpha1.RebindAnnotation))
	case f.secret == secretMissing:
		return mustAct(iamv1alpha1.ReasonSecretMissing,
			fmt.Sprintf("Secret %q was deleted: clients that hold the secret keep working; "+
				"increase spec.rotation.keyVersion to issue new keys", f.secretName))
	case !issued(cred):
		return inFlight(iamv1alpha1.ReasonProgressing, "issuing the secret")
	case !cred.Spec.IsActive():
		rd.ready = verdict{metav1.ConditionTrue, iamv1alpha1.ReasonInactive,
			fmt.Sprintf("inactive as declared (spec.active is false): token servers refuse this credential; its keys are kept in Secret %q", f.secretName)}
	case expired(cred, now):
		rd.ready = verdict{metav1.ConditionTrue, iamv1alpha1.ReasonExpired,
			fmt.Sprintf("expired as declared (spec.expiresAt %s has passed): token servers refuse this credential",
				cred.Spec.ExpiresAt.UTC().Format(time.RFC3339))}
	case !cred.Spec.IssuesSecret():
		rd.ready = verdict{metav1.ConditionTrue, iamv1alpha1.ReasonIssued,
			"client ID issued, with no secret and no Secret (spec.issueSecret is false): workloads exchange their ServiceAccount tokens (spec.workloadIdentity)"}
	default:
		rd.ready = verdict{metav1.ConditionTrue, iamv1alpha1.ReasonIssued,
			fmt.Sprintf("client secret issued into Secret %q", f.secretName)}
	}
	return rd
}

// computeActive says whether token servers accept the credential now: they refuse it
// while inactive, expired or not issued yet, and accept it otherwise, also while its
// Secret is missing (clients that hold the secret keep working).
func computeActive(cred *iamv1alpha1.APICredential, now time.Time) verdict {
	switch {
	case !cred.Spec.IsActive():
		return verdict{metav1.ConditionFalse, iamv1alpha1.ReasonInactive, "spec.active is false: token servers refuse this credential"}
	case expired(cred, now):
		return verdict{metav1.ConditionFalse, iamv1alpha1.ReasonExpired,
			fmt.Sprintf("spec.expiresAt (%s) has passed: token servers refuse this credential",
				cred.Spec.ExpiresAt.UTC().Format(time.RFC3339))}
	case !issued(cred):
		return verdict{metav1.ConditionFalse, iamv1alpha1.ReasonProgressing, "no secret issued yet: token servers refuse this credential"}
	default:
		return verdict{metav1.ConditionTrue, iamv1alpha1.ReasonIssued, "token servers accept this credential"}
	}
}

// expired reports whether the credential's spec.expiresAt has passed at now.
func expired(cred *iamv1alpha1.APICredential, now time.Time) bool {
	return cred.Spec.ExpiresAt != nil && !now.Before(cred.Spec.ExpiresAt.Time)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// applyReadiness writes the kstatus conditions for rd: Ready and Active always, Stalled
// and Reconciling only while true, each with the generation it was computed for.
func applyReadiness(cred *iamv1alpha1.APICredential, rd readiness) {
	gen := cred.Generation
	conds := &cred.Status.Conditions
	set := func(condType string, v verdict) {
		meta.SetStatusCondition(conds, metav1.Condition{
			Type: condType, Status: v.status, Reason: v.reason, Message: v.message, ObservedGeneration: gen,
		})
	}
	set(iamv1alpha1.ConditionReady, rd.ready)
	set(iamv1alpha1.ConditionActive, rd.active)
	onlyWhileTrue := func(condType string, on bool) {
		if on {
			set(condType, verdict{metav1.ConditionTrue, rd.ready.reason, rd.ready.message})
		} else {
			meta.RemoveStatusCondition(conds, condType)
		}
	}
	onlyWhileTrue(iamv1alpha1.ConditionStalled, rd.stalled)
	onlyWhileTrue(iamv1alpha1.ConditionReconciling, rd.reconciling)
	cred.Status.ObservedGeneration = gen
}

// conditionMessage returns the message of the condition of the given type, or "".
func conditionMessage(cred *iamv1alpha1.APICredential, condType string) string {
	if c := meta.FindStatusCondition(cred.Status.Conditions, condType); c != nil {
		return c.Message
	}
	return ""
}

// readyMessage returns the message of the Ready condition, or "" when there is none.
func readyMessage(cred *iamv1alpha1.APICredential) string {
	return conditionMessage(cred, iamv1alpha1.ConditionReady)
}

// readyReason returns the reason of the Ready condition, or "" when there is none.
func readyReason(cred *iamv1alpha1.APICredential) string {
	if c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// activeReason returns the reason of the Active condition. Status written before that
// condition existed said the same with Ready's Issued, Inactive or Expired.
func activeReason(cred *iamv1alpha1.APICredential) string {
	if c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionActive); c != nil {
		return c.Reason
	}
	switch reason := readyReason(cred); reason {
	case iamv1alpha1.ReasonIssued, iamv1alpha1.ReasonInactive, iamv1alpha1.ReasonExpired:
		return reason
	}
	return ""
}

// personMustAct reports whether reason is one that only a person can resolve.
func personMustAct(reason string) bool {
	switch reason {
	case iamv1alpha1.ReasonInvalidSpec, iamv1alpha1.ReasonSecretConflict, iamv1alpha1.ReasonSecretModified, iamv1alpha1.ReasonSecretMissing:
		return true
	}
	return false
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

// requeueFor says when to come back to the credential: exactly when its next deadline
// falls (a grace period ending, the expiry, an automatic rotation falling due), and, while
// a foreign Secret or another credential holds what it needs, at least every
// conflictRecheck: their deletion raises no event for this credential (the foreign
// Secret is outside the cache, it lacks keysmith's label). Otherwise never: the
// reconciler waits for events instead of polling. A pure function of the spec, the
// status, the facts and the time.
func requeueFor(cred *iamv1alpha1.APICredential, f readinessFacts, now time.Time) ctrl.Result {
	var res ctrl.Result
	if deadline, ok := nextDeadline(cred, now); ok {
		res.RequeueAfter = deadline.Sub(now)
	}
	blocked := f.invalidSpec == nil && (f.secret == secretConflict || f.secret == secretClientIDTaken)
	if blocked && (res.RequeueAfter == 0 || res.RequeueAfter > conflictRecheck) {
		res.RequeueAfter = conflictRecheck
	}
	return res
}
