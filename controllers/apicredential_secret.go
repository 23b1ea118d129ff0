package controllers

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// secretAction is what the write-once table decides to do about the credential's Secret.
type secretAction int

const (
	// actionNone: the Secret holds the issued secret, bound under the current key; write nothing.
	actionNone secretAction = iota
	// actionMint: nothing was issued yet; mint keys and Create the Secret.
	actionMint
	// actionAdopt: status lost its hash (crash or restore); record the bound Secret's data.
	actionAdopt
	// actionAdoptRotation: the bound Secret holds a newer secret than status (a rotation
	// whose status write was lost); record it as the rotation it was.
	actionAdoptRotation
	// actionRotate: a rotation is due; issue a new secret into the Secret.
	actionRotate
	// actionBind: the Secret holds what status records but its binding is missing (written
	// before bindings), under a retained key, or its owner reference names an older UID;
	// write the binding and the owner reference, never the data.
	actionBind
	// actionRebind: status was lost and the Secret carries no valid binding, and a person
	// asked with iam.keysmith.dev/rebind; record the Secret's data and bind it.
	actionRebind
	// actionReportMissing: the Secret was deleted; never mint silently.
	actionReportMissing
	// actionReportModified: the Secret's credential data was changed; never rewrite it.
	actionReportModified
	// actionReportUnbound: status was lost and the Secret's data carries no valid binding:
	// it is not adopted (a Secret writer must not choose the secret) until rebound.
	actionReportUnbound
	// actionReportConflict: a Secret with the target name belongs to something else.
	actionReportConflict
	// actionReportTaken: the client ID in the Secret is held by another APICredential.
	actionReportTaken
)

var secretActionNames = [...]string{"None", "Mint", "Adopt", "AdoptRotation", "Rotate", "Bind", "Rebind",
	"ReportMissing", "ReportModified", "ReportUnbound", "ReportConflict", "ReportTaken"}

func (a secretAction) String() string { return secretActionNames[a] }

// secretState is the state of the Secret as shown in conditions.
type secretState int

const (
	secretOK secretState = iota
	secretMissing
	secretModified
	secretUnbound
	secretConflict
	secretClientIDTaken
)

// state maps an action to the Secret state it leaves behind.
func (a secretAction) state() secretState {
	switch a {
	case actionReportMissing:
		return secretMissing
	case actionReportModified:
		return secretModified
	case actionReportUnbound:
		return secretUnbound
	case actionReportConflict:
		return secretConflict
	case actionReportTaken:
		return secretClientIDTaken
	default:
		return secretOK
	}
}

// secretFacts is what the reconciler read from the credential's Secret. Read live, it
// holds the plaintext secret: never log or print it.
type secretFacts struct {
	exists bool
	// owned: the Secret's controller reference is this credential (by UID).
	owned    bool
	clientID string
	// clientSecret is the plaintext secret of a live read; empty in facts read from the
	// cache's copy, which holds only its hash.
	clientSecret string
	// secretHash is the hash (credential.Hash) of the client secret under the
	// credential's key: of whatever a live Secret holds there, and, from the cache's copy,
	// of a well-formed secret only (else empty).
	secretHash string
	// keyVersion and issuedAt are read from the Secret's annotations (zero when absent).
	keyVersion int64
	issuedAt   time.Time
	// bound is the Secret's binding verified for this credential's namespace and name
	// over the Secret's own client ID, secret hash, key version and issue time.
	bound binding.Result
	// heldElsewhere: another APICredential's status holds the Secret's client ID.
	heldElsewhere bool
}

// holdsSecret reports whether the Secret's client secret is the one hash (status's) is
// of. Both are hashes in credential.Hash's one canonical form (a hash in another form
// matches no secret, as credential.Verify has it); the comparison need not take constant
// time, the hash being no secret (status shows it).
func (f secretFacts) holdsSecret(hash string) bool {
	return f.secretHash != "" && f.secretHash == hash
}

// readSecretFacts extracts the facts from a live Secret, which may be nil (absent), and
// verifies its binding under ring. heldElsewhere is left to the caller (an index lookup).
func readSecretFacts(cred *iamv1alpha1.APICredential, s *corev1.Secret, ring *binding.Ring) secretFacts {
	if s == nil {
		return secretFacts{}
	}
	keys := cred.Spec.SecretKeyNames()
	f := secretFacts{
		exists:       true,
		owned:        metav1.IsControlledBy(s, cred),
		clientID:     string(s.Data[keys.ClientID]),
		clientSecret: string(s.Data[keys.ClientSecret]),
	}
	f.secretHash = credential.Hash(f.clientSecret)
	readAnnotatedFacts(&f, cred, s.Annotations[iamv1alpha1.KeyVersionAnnotation], s.Annotations[iamv1alpha1.IssuedAtAnnotation],
		s.Annotations[iamv1alpha1.BindingAnnotation], ring)
	return f
}

// cachedSecretFacts extracts the facts from the cache's copy of a Secret (nil: the cache
// holds none), as trimCredentialSecret left them. They can decide that nothing is to be
// done, exactly when the Secret they were read from would (the same client ID, a secret
// of the same hash, the same annotations, the same owner references); they hold no
// plaintext secret, so any other decision is taken again on a live read
// (gatherAndDecide), as it always was. A copy not in the cached form gives facts of a
// Secret that holds nothing of status's, which never decide nothing.
func cachedSecretFacts(cred *iamv1alpha1.APICredential, s *corev1.Secret, ring *binding.Ring) secretFacts {
	if s == nil {
		return secretFacts{}
	}
	f := secretFacts{exists: true, owned: metav1.IsControlledBy(s, cred)}
	keys := cred.Spec.SecretKeyNames()
	c, ok := decodeCachedFacts(s.GenerateName, keys.ClientID, keys.ClientSecret)
	if !ok {
		return f
	}
	f.clientID, f.secretHash = c.clientID, c.secretHash
	readAnnotatedFacts(&f, cred, c.keyVersion, c.issuedAt, c.bindingValue, ring)
	return f
}

// issuedAtAnnotation is the issued-at annotation's value for t, as the reconciler writes it
// (RFC 3339, whole seconds, UTC) and readAnnotatedFacts reads it.
func issuedAtAnnotation(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// readAnnotatedFacts sets the facts that the Secret's keysmith annotations give: its key
// version, its issue time and whether its binding verifies under ring.
func readAnnotatedFacts(f *secretFacts, cred *iamv1alpha1.APICredential, keyVersion, issuedAt, bindingValue string, ring *binding.Ring) {
	f.keyVersion, _ = strconv.ParseInt(keyVersion, 10, 64)
	f.issuedAt, _ = time.Parse(time.RFC3339, issuedAt)
	// Read at the precision the binding covers (whole seconds, UTC): a fraction added to a
	// bound issue time keeps the binding valid, and must not make the data look newer.
	f.issuedAt = f.issuedAt.UTC().Truncate(time.Second)
	if bindingValue != "" && ring != nil && f.secretHash != "" {
		f.bound = ring.Verify(bindingValue, bindingSubject(cred, f.clientID, f.secretHash, f.keyVersion, f.issuedAt))
	}
}

// bindingSubject is what the binding of the credential's Secret covers: the credential's
// namespace and name (not its UID, which a restore changes) and the data's identity.
func bindingSubject(cred *iamv1alpha1.APICredential, clientID, secretHash string, keyVersion int64, issuedAt time.Time) binding.Subject {
	return binding.Subject{
		Namespace: cred.Namespace, Name: cred.Name, ClientID: clientID, SecretHash: secretHash,
		KeyVersion: keyVersion, IssuedAt: issuedAt,
	}
}

// rebindRequested reports whether a person asked for the Secret to be bound deliberately.
func rebindRequested(cred *iamv1alpha1.APICredential) bool {
	return cred.Annotations[iamv1alpha1.RebindAnnotation] == "true"
}

// rotationDue reports whether new keys must be issued over a secret issued at keyVersion
// and issuedAt (zero when unknown): spec.rotation.keyVersion was increased past it, or the
// automatic rotation period has elapsed since it was issued.
func rotationDue(cred *iamv1alpha1.APICredential, keyVersion int64, issuedAt, now time.Time) bool {
	if cred.Spec.Rotation.KeyVersion > keyVersion {
		return true
	}
	p := cred.Spec.Rotation.Period
	return p != nil && !issuedAt.IsZero() && !now.Before(issuedAt.Add(p.Duration))
}

// decideSecret is the write-once table: given the credential and its Secret, what to do.
// The operator never regenerates a secret except on an explicit or scheduled rotation,
// never rewrites one that someone changed or that it does not own, and records data it
// did not mint in this reconcile only when the Secret carries its binding (DESIGN §2
// item 9): whoever can write the Secret can neither choose a secret nor take another
// credential's client ID. A Secret is ours when it is controlled by this credential's UID
// or bound to its namespace and name (a restore changes the UID).
//
//	Secret                     status hash          action
//	absent                     empty                mint
//	absent                     set                  rotate if due, else report missing
//	present, not ours          any                  report conflict
//	present, ours              empty                adopt or rebind (decideAdoption)
//	present, ours              matches              rotate if due; bind if not bound under the
//	                                                current key to this UID (migration), unless
//	                                                another credential holds the client ID
//	present, ours, bound       differs, newer data  adopt the rotation whose status write was lost
//	present, ours              differs              rotate if due, else report modified
func decideSecret(cred *iamv1alpha1.APICredential, s secretFacts, now time.Time) secretAction {
	st := &cred.Status
	// What was issued last: status says, unless it was lost; then the Secret's annotations.
	issuedVersion, issuedAt := st.KeyVersion, time.Time{}
	if st.IssuedAt != nil {
		issuedAt = st.IssuedAt.Time
	}
	if st.SecretHash == "" {
		issuedVersion, issuedAt = s.keyVersion, s.issuedAt
	}
	due := rotationDue(cred, issuedVersion, issuedAt, now)
	if !s.exists {
		switch {
		case st.SecretHash == "":
			return actionMint
		case due:
			return actionRotate
		default:
			return actionReportMissing
		}
	}
	if !s.owned && !s.bound.Bound() {
		return actionReportConflict
	}
	if st.SecretHash == "" {
		return decideAdoption(cred, s, due)
	}
	if s.clientID == st.ClientID && s.holdsSecret(st.SecretHash) {
		switch {
		case due:
			return actionRotate
		case s.owned && s.bound == binding.BoundCurrent:
			return actionNone
		case s.heldElsewhere:
			return actionReportTaken
		default:
			return actionBind
		}
	}
	if wellFormed(s) && s.clientID == st.ClientID && newerThanStatus(s, st) &&
		s.keyVersion <= cred.Spec.Rotation.KeyVersion && s.bound.Bound() {
		if s.heldElsewhere {
			return actionReportTaken
		}
		return actionAdoptRotation
	}
	if due {
		return actionRotate
	}
	return actionReportModified
}

// decideAdoption is the part of the table for a Secret of ours whose data status does
// not record (a crash before the status write, or a restore that lost status). Checks in
// order: the client ID is held by no other credential, else conflict; the binding
// verifies, else only a deliberate rebind records the data.
//
//	Secret data                         action
//	malformed                           rotate if due (new keys), else report modified
//	client ID held by another           report taken (conflict)
//	bound, older key version than spec  rotate, keeping the bound client ID (the secret was rotated away)
//	bound                               adopt (and re-point the owner reference)
//	unbound, rebind requested           rebind
//	unbound, key version bumped         rotate (new keys: the client ID is not proven ours)
//	unbound                             report unbound
//
// An unbound Secret is rotated only on a deliberate key version bump, never because the
// automatic period elapsed: that would replace a restored client ID that a person can
// still rebind.
func decideAdoption(cred *iamv1alpha1.APICredential, s secretFacts, due bool) secretAction {
	bumped := cred.Spec.Rotation.KeyVersion > s.keyVersion
	switch {
	case !wellFormed(s) && due:
		return actionRotate // status and the Secret's data are both lost: new keys on request
	case !wellFormed(s):
		return actionReportModified
	case s.heldElsewhere:
		return actionReportTaken
	case s.bound.Bound() && bumped:
		return actionRotate
	case s.bound.Bound():
		return actionAdopt
	case rebindRequested(cred):
		return actionRebind
	case bumped:
		return actionRotate
	default:
		return actionReportUnbound
	}
}

// wellFormed reports whether the Secret holds a well-formed client ID and secret.
func wellFormed(s secretFacts) bool {
	return credential.ValidClientID(s.clientID) && credential.ParseSecret(s.clientSecret) == nil
}

// newerThanStatus reports whether the Secret's data was issued after the secret that
// status records: by a higher key version or a later issue time.
func newerThanStatus(s secretFacts, st *iamv1alpha1.APICredentialStatus) bool {
	if s.keyVersion > st.KeyVersion {
		return true
	}
	return st.IssuedAt != nil && s.issuedAt.After(st.IssuedAt.Time)
}
