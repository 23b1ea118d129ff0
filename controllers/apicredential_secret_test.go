package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

func TestDecideSecret(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	issuedAt := metav1.NewTime(now.Add(-time.Hour))
	clientID := mustClientID(t)
	current, other := mustSecret(t), mustSecret(t)

	issued := iamv1alpha1.APICredentialStatus{ClientID: clientID, SecretHash: credential.Hash(current), IssuedAt: &issuedAt, KeyVersion: 2}
	holding := func(plain string) secretFacts {
		return secretFacts{exists: true, owned: true, clientID: clientID, clientSecret: plain, keyVersion: 2, issuedAt: issuedAt.Time}
	}
	newer := holding(other)
	newer.keyVersion = 3
	laterIssued := holding(other)
	laterIssued.issuedAt = now
	notOurs := holding(current)
	notOurs.owned = false
	otherClient := holding(current)
	otherClient.clientID = mustClientID(t)

	tests := []struct {
		name       string
		status     iamv1alpha1.APICredentialStatus
		keyVersion int64
		period     time.Duration
		secret     secretFacts
		want       secretAction
	}{
		{"absent, nothing issued: mint", iamv1alpha1.APICredentialStatus{}, 0, 0, secretFacts{}, actionMint},
		{"absent, issued: report missing, never mint silently", issued, 2, 0, secretFacts{}, actionReportMissing},
		{"absent, issued, key version bumped: rotate", issued, 3, 0, secretFacts{}, actionRotate},
		{"present, not ours: conflict", issued, 2, 0, notOurs, actionReportConflict},
		{"present, not ours, nothing issued: conflict", iamv1alpha1.APICredentialStatus{}, 0, 0, notOurs, actionReportConflict},
		{"present, ours, status lost: adopt", iamv1alpha1.APICredentialStatus{}, 2, 0, holding(current), actionAdopt},
		{"present, ours, status lost, data unusable: report modified", iamv1alpha1.APICredentialStatus{}, 2, 0, holding("hunter2"), actionReportModified},
		{"present, ours, status lost, data unusable, key version bumped: rotate", iamv1alpha1.APICredentialStatus{}, 3, 0, holding("hunter2"), actionRotate},
		{"present, matches: nothing", issued, 2, 0, holding(current), actionNone},
		{"present, matches, key version bumped: rotate", issued, 3, 0, holding(current), actionRotate},
		{"present, matches, period elapsed: rotate", issued, 2, time.Hour, holding(current), actionRotate},
		{"present, matches, period not yet elapsed: nothing", issued, 2, 2 * time.Hour, holding(current), actionNone},
		{"present, newer key version: adopt the lost rotation", issued, 3, 0, newer, actionAdoptRotation},
		{"present, issued later: adopt the lost automatic rotation", issued, 2, 0, laterIssued, actionAdoptRotation},
		{"present, data changed: report modified, never rewrite", issued, 2, 0, holding(other), actionReportModified},
		{"present, garbage data: report modified", issued, 2, 0, holding("hunter2"), actionReportModified},
		{"present, data changed, key version bumped: rotate", issued, 3, 0, holding("hunter2"), actionRotate},
		{"present, another client ID: report modified", issued, 2, 0, otherClient, actionReportModified},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{Status: tt.status}
			cred.Spec.Rotation.KeyVersion = tt.keyVersion
			if tt.period > 0 {
				cred.Spec.Rotation.Period = &metav1.Duration{Duration: tt.period}
			}
			if got := decideSecret(cred, tt.secret, now); got != tt.want {
				t.Errorf("decideSecret() = %v, want %v", got, tt.want)
			}
		})
	}
}

func mustClientID(t *testing.T) string {
	t.Helper()
	id, err := credential.NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustSecret(t *testing.T) string {
	t.Helper()
	s, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
