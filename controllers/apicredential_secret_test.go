package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

func TestDecideSecret(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	issuedAt := metav1.NewTime(now.Add(-time.Hour))
	clientID := mustClientID(t)
	current, other := mustSecret(t), mustSecret(t)

	issued := iamv1alpha1.APICredentialStatus{ClientID: clientID, SecretHash: credential.Hash(current), IssuedAt: &issuedAt, KeyVersion: 2}
	// holding is a Secret this credential controls, bound by the operator under the current key.
	holding := func(plain string, mutate ...func(*secretFacts)) secretFacts {
		f := secretFacts{exists: true, owned: true, clientID: clientID, clientSecret: plain, secretHash: credential.Hash(plain), keyVersion: 2, issuedAt: issuedAt.Time, bound: binding.BoundCurrent}
		for _, m := range mutate {
			m(&f)
		}
		return f
	}
	unbound := func(f *secretFacts) { f.bound = binding.Unbound }
	retained := func(f *secretFacts) { f.bound = binding.BoundRetained }
	notOwned := func(f *secretFacts) { f.owned = false }
	taken := func(f *secretFacts) { f.heldElsewhere = true }
	newer := func(f *secretFacts) { f.keyVersion = 3 }
	later := func(f *secretFacts) { f.issuedAt = now }
	otherClient := func(f *secretFacts) { f.clientID = mustClientID(t) }
	lost := iamv1alpha1.APICredentialStatus{}

	tests := []struct {
		name       string
		status     iamv1alpha1.APICredentialStatus
		keyVersion int64
		period     time.Duration
		rebind     bool
		secret     secretFacts
		want       secretAction
	}{
		{"absent, nothing issued: mint", lost, 0, 0, false, secretFacts{}, actionMint},
		{"absent, issued: report missing, never mint silently", issued, 2, 0, false, secretFacts{}, actionReportMissing},
		{"absent, issued, key version bumped: rotate", issued, 3, 0, false, secretFacts{}, actionRotate},

		{"present, neither controlled nor bound: conflict", issued, 2, 0, false, holding(current, notOwned, unbound), actionReportConflict},
		{"present, neither controlled nor bound, nothing issued: conflict", lost, 0, 0, false, holding(current, notOwned, unbound), actionReportConflict},
		{"present, neither controlled nor bound, rebind asked: conflict", lost, 2, 0, true, holding(current, notOwned, unbound), actionReportConflict},

		{"matches, bound, controlled: nothing", issued, 2, 0, false, holding(current), actionNone},
		{"matches, key version bumped: rotate", issued, 3, 0, false, holding(current), actionRotate},
		{"matches, period elapsed: rotate", issued, 2, time.Hour, false, holding(current), actionRotate},
		{"matches, period not yet elapsed: nothing", issued, 2, 2 * time.Hour, false, holding(current), actionNone},
		{"matches, never bound (written before bindings): bind (migration)", issued, 2, 0, false, holding(current, unbound), actionBind},
		{"matches, bound under a retained key: bind under the current one", issued, 2, 0, false, holding(current, retained), actionBind},
		{"matches, bound, controlled by an older UID: bind re-points the owner", issued, 2, 0, false, holding(current, notOwned), actionBind},
		{"matches, never bound, client ID held by another credential: conflict, not bound", issued, 2, 0, false, holding(current, unbound, taken), actionReportTaken},

		{"status lost, bound: adopt", lost, 2, 0, false, holding(current), actionAdopt},
		{"status lost, bound, controlled by an older UID (a restore): adopt", lost, 2, 0, false, holding(current, notOwned), actionAdopt},
		{"status lost, bound under a retained key: adopt", lost, 2, 0, false, holding(current, retained), actionAdopt},
		{"status lost, bound, client ID held by another credential: conflict", lost, 2, 0, false, holding(current, taken), actionReportTaken},
		{"status lost, bound, key version bumped since (rotated away): rotate, never adopt", lost, 3, 0, false, holding(current), actionRotate},
		{"status lost, bound, period elapsed: adopt, then rotate", lost, 2, time.Hour, false, holding(current), actionAdopt},
		{"status lost, unbound: report unbound", lost, 2, 0, false, holding(current, unbound), actionReportUnbound},
		{"status lost, unbound, period elapsed: report unbound, the client ID can still be rebound", lost, 2, time.Hour, false, holding(current, unbound), actionReportUnbound},
		{"status lost, unbound, key version bumped: rotate (new keys)", lost, 3, 0, false, holding(current, unbound), actionRotate},
		{"status lost, unbound, rebind asked: rebind", lost, 2, 0, true, holding(current, unbound), actionRebind},
		{"status lost, unbound, rebind asked, client ID held by another: conflict", lost, 2, 0, true, holding(current, unbound, taken), actionReportTaken},
		{"status lost, unbound, rebind asked, malformed data: report modified", lost, 2, 0, true, holding("hunter2", unbound), actionReportModified},
		{"status lost, data malformed: report modified", lost, 2, 0, false, holding("hunter2"), actionReportModified},
		{"status lost, data malformed, key version bumped: rotate", lost, 3, 0, false, holding("hunter2"), actionRotate},

		{"newer key version, bound: adopt the lost rotation", issued, 3, 0, false, holding(other, newer), actionAdoptRotation},
		{"issued later, bound: adopt the lost automatic rotation", issued, 2, 0, false, holding(other, later), actionAdoptRotation},
		{"newer key version than spec asks: report modified", issued, 2, 0, false, holding(other, newer), actionReportModified},
		{"issued later, unbound (finding 3: a chosen secret): report modified", issued, 2, 0, false, holding(other, later, unbound), actionReportModified},
		{"newer key version, unbound, key version bumped (finding 3): rotate over it, never adopt", issued, 3, 0, false, holding(other, newer, unbound), actionRotate},
		{"issued later, bound, client ID held by another: conflict", issued, 2, 0, false, holding(other, later, taken), actionReportTaken},
		{"an older bound Secret written back: report modified", issued, 2, 0, false, holding(other, func(f *secretFacts) { f.issuedAt = issuedAt.Add(-time.Hour) }), actionReportModified},
		{"data changed: report modified, never rewrite", issued, 2, 0, false, holding(other), actionReportModified},
		{"garbage data: report modified", issued, 2, 0, false, holding("hunter2"), actionReportModified},
		{"data changed, key version bumped: rotate", issued, 3, 0, false, holding("hunter2"), actionRotate},
		{"another client ID: report modified", issued, 2, 0, false, holding(current, otherClient), actionReportModified},
		{"another client ID, issued later and bound: report modified", issued, 2, 0, false, holding(other, otherClient, later), actionReportModified},
		{"rebind asked with status intact: the table ignores it", issued, 2, 0, true, holding(other, later, unbound), actionReportModified},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{Status: tt.status}
			cred.Spec.Rotation.KeyVersion = tt.keyVersion
			if tt.period > 0 {
				cred.Spec.Rotation.Period = &metav1.Duration{Duration: tt.period}
			}
			if tt.rebind {
				cred.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			}
			if got := decideSecret(cred, tt.secret, now); got != tt.want {
				t.Errorf("decideSecret() = %v, want %v", got, tt.want)
			}
			// The reconciler decides from the cache without the client-ID lookup and
			// trusts only actionNone from it: the holder must never decide that.
			flipped := tt.secret
			flipped.heldElsewhere = !flipped.heldElsewhere
			if none, flippedNone := tt.want == actionNone, decideSecret(cred, flipped, now) == actionNone; none != flippedNone {
				t.Errorf("with heldElsewhere=%v, decideSecret() = actionNone is %v, want %v", flipped.heldElsewhere, flippedNone, none)
			}
		})
	}
}

func TestReadSecretFactsVerifiesTheBinding(t *testing.T) {
	ring, err := binding.NewRing(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issuedAt := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	clientID, plain := mustClientID(t), mustSecret(t)
	cred := &iamv1alpha1.APICredential{}
	cred.Namespace, cred.Name, cred.UID = "team-a", "billing", "uid-1"
	secret := func(mutate func(*corev1.Secret)) *corev1.Secret {
		s := &corev1.Secret{Data: map[string][]byte{
			iamv1alpha1.DefaultClientIDKey: []byte(clientID), iamv1alpha1.DefaultClientSecretKey: []byte(plain),
		}}
		s.Annotations = map[string]string{
			iamv1alpha1.KeyVersionAnnotation: "1",
			iamv1alpha1.IssuedAtAnnotation:   issuedAt.Format(time.RFC3339),
			iamv1alpha1.BindingAnnotation:    ring.Sign(bindingSubject(cred, clientID, credential.Hash(plain), 1, issuedAt)),
		}
		if mutate != nil {
			mutate(s)
		}
		return s
	}
	tests := []struct {
		name   string
		cred   *iamv1alpha1.APICredential
		secret *corev1.Secret
		want   binding.Result
	}{
		{"as the operator wrote it", cred, secret(nil), binding.BoundCurrent},
		{"another secret", cred, secret(func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(mustSecret(t)) }), binding.Unbound},
		{"another client ID", cred, secret(func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientIDKey] = []byte(mustClientID(t)) }), binding.Unbound},
		{"issued-at moved forward", cred, secret(func(s *corev1.Secret) {
			s.Annotations[iamv1alpha1.IssuedAtAnnotation] = issuedAt.Add(time.Hour).Format(time.RFC3339)
		}), binding.Unbound},
		{"key version raised", cred, secret(func(s *corev1.Secret) { s.Annotations[iamv1alpha1.KeyVersionAnnotation] = "2" }), binding.Unbound},
		{"no binding", cred, secret(func(s *corev1.Secret) { delete(s.Annotations, iamv1alpha1.BindingAnnotation) }), binding.Unbound},
		{"read for a credential of another namespace", func() *iamv1alpha1.APICredential { c := cred.DeepCopy(); c.Namespace = "team-b"; return c }(), secret(nil), binding.Unbound},
		{"read for a recreated credential (new UID)", func() *iamv1alpha1.APICredential { c := cred.DeepCopy(); c.UID = "uid-2"; return c }(), secret(nil), binding.BoundCurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readSecretFacts(tt.cred, tt.secret, ring).bound; got != tt.want {
				t.Errorf("bound = %v, want %v", got, tt.want)
			}
		})
	}
}

func mustClientID(t testing.TB) string {
	t.Helper()
	id, err := credential.NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustSecret(t testing.TB) string {
	t.Helper()
	s, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
