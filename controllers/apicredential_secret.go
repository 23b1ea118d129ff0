package controllers

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// secretAction is what the write-once table decides to do about the credential's Secret.
type secretAction int

const (
	// actionNone: the Secret holds the issued secret; write nothing.
	actionNone secretAction = iota
	// actionMint: nothing was issued yet; mint keys and Create the Secret.
	actionMint
	// actionAdopt: status lost its hash (crash or restore); recompute it from the owned Secret.
	actionAdopt
	// actionAdoptRotation: the owned Secret holds a newer secret than status (a rotation whose
	// status write was lost); record it as the rotation it was.
	actionAdoptRotation
	// actionRotate: a rotation is due; issue a new secret into the Secret.
	actionRotate
	// actionReportMissing: the Secret was deleted; never mint silently.
	actionReportMissing
	// actionReportModified: the Secret's credential data was changed; never rewrite it.
	actionReportModified
	// actionReportConflict: a Secret with the target name belongs to something else.
	actionReportConflict
)

var secretActionNames = [...]string{"None", "Mint", "Adopt", "AdoptRotation", "Rotate", "ReportMissing", "ReportModified", "ReportConflict"}

func (a secretAction) String() string { return secretActionNames[a] }

// writes reports whether the action writes credential data into a Secret.
func (a secretAction) writes() bool { return a == actionMint || a == actionRotate }

// secretState is the state of the Secret as shown in conditions.
type secretState int

const (
	secretOK secretState = iota
	secretMissing
	secretModified
	secretConflict
)

// state maps an action to the Secret state it leaves behind.
func (a secretAction) state() secretState {
	switch a {
	case actionReportMissing:
		return secretMissing
	case actionReportModified:
		return secretModified
	case actionReportConflict:
		return secretConflict
	default:
		return secretOK
	}
}

// secretFacts is what the reconciler read from the credential's Secret. It holds the
// plaintext secret: never log or print it.
type secretFacts struct {
	exists bool
	// owned: the Secret's controller reference is this credential.
	owned        bool
	clientID     string
	clientSecret string
	// keyVersion and issuedAt are read from the Secret's annotations (zero when absent).
	keyVersion int64
	issuedAt   time.Time
}

// readSecretFacts extracts the facts from a Secret, which may be nil (absent).
func readSecretFacts(cred *iamv1alpha1.APICredential, s *corev1.Secret) secretFacts {
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
	f.keyVersion, _ = strconv.ParseInt(s.Annotations[iamv1alpha1.KeyVersionAnnotation], 10, 64)
	f.issuedAt, _ = time.Parse(time.RFC3339, s.Annotations[iamv1alpha1.IssuedAtAnnotation])
	return f
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
// The operator never regenerates a secret except on an explicit or scheduled rotation, and
// never rewrites one that someone changed or that it does not own.
//
//	Secret             status hash          action
//	absent             empty                mint
//	absent             set                  rotate if due, else report missing
//	present, not ours  any                  report conflict
//	present, ours      empty                adopt (crash or restore); if unusable, rotate if due, else report modified
//	present, ours      matches              rotate if due, else nothing
//	present, ours      differs, newer data  adopt the rotation whose status write was lost
//	present, ours      differs              rotate if due, else report modified
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
	if !s.owned {
		return actionReportConflict
	}
	usable := credential.ValidClientID(s.clientID) && credential.ParseSecret(s.clientSecret) == nil &&
		(st.ClientID == "" || st.ClientID == s.clientID)
	if st.SecretHash == "" {
		switch {
		case usable:
			return actionAdopt
		case due:
			return actionRotate // status and the Secret's data are both lost: new keys on request
		default:
			return actionReportModified
		}
	}
	if s.clientID == st.ClientID && credential.Verify(s.clientSecret, st.SecretHash) {
		if due {
			return actionRotate
		}
		return actionNone
	}
	if usable && newerThanStatus(s, st) {
		return actionAdoptRotation
	}
	if due {
		return actionRotate
	}
	return actionReportModified
}

// newerThanStatus reports whether the Secret's data was issued after the secret that
// status records: by a higher key version or a later issue time.
func newerThanStatus(s secretFacts, st *iamv1alpha1.APICredentialStatus) bool {
	if s.keyVersion > st.KeyVersion {
		return true
	}
	return st.IssuedAt != nil && s.issuedAt.After(st.IssuedAt.Time)
}
