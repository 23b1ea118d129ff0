package controllers

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func TestComputeReadiness(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	past, future := metav1.NewTime(now.Add(-time.Second)), metav1.NewTime(now.Add(time.Hour))
	issued := iamv1alpha1.APICredentialStatus{SecretHash: "sha256:00"}
	invalid := errors.New("spec.apis[0].name: Invalid value")

	tests := []struct {
		name        string
		active      *bool
		expiresAt   *metav1.Time
		status      iamv1alpha1.APICredentialStatus
		facts       readinessFacts
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantStalled bool
	}{
		{"issued", nil, nil, issued, readinessFacts{}, metav1.ConditionTrue, iamv1alpha1.ReasonIssued, false},
		{"issued, expiry ahead", nil, &future, issued, readinessFacts{}, metav1.ConditionTrue, iamv1alpha1.ReasonIssued, false},
		{"not yet issued", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{}, metav1.ConditionUnknown, iamv1alpha1.ReasonProgressing, false},
		{"invalid spec wins over everything", ptr.To(false), &past, issued, readinessFacts{invalidSpec: invalid, secret: secretMissing}, metav1.ConditionFalse, iamv1alpha1.ReasonInvalidSpec, true},
		{"inactive wins over expired", ptr.To(false), &past, issued, readinessFacts{}, metav1.ConditionFalse, iamv1alpha1.ReasonInactive, false},
		{"inactive wins over a missing Secret", ptr.To(false), nil, issued, readinessFacts{secret: secretMissing}, metav1.ConditionFalse, iamv1alpha1.ReasonInactive, false},
		{"expired at the second", nil, &past, issued, readinessFacts{}, metav1.ConditionFalse, iamv1alpha1.ReasonExpired, false},
		{"expired wins over a missing Secret", nil, &past, issued, readinessFacts{secret: secretMissing}, metav1.ConditionFalse, iamv1alpha1.ReasonExpired, false},
		{"secret missing", ptr.To(true), nil, issued, readinessFacts{secret: secretMissing}, metav1.ConditionFalse, iamv1alpha1.ReasonSecretMissing, true},
		{"secret modified", nil, nil, issued, readinessFacts{secret: secretModified}, metav1.ConditionFalse, iamv1alpha1.ReasonSecretModified, true},
		{"secret conflict", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretConflict}, metav1.ConditionFalse, iamv1alpha1.ReasonSecretConflict, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{Status: tt.status}
			cred.Spec.Active = tt.active
			cred.Spec.ExpiresAt = tt.expiresAt
			got := computeReadiness(cred, tt.facts, now)
			if got.status != tt.wantStatus || got.reason != tt.wantReason || got.stalled != tt.wantStalled {
				t.Errorf("computeReadiness() = %s/%s stalled=%v, want %s/%s stalled=%v",
					got.status, got.reason, got.stalled, tt.wantStatus, tt.wantReason, tt.wantStalled)
			}
			if got.message == "" {
				t.Error("every reason carries a message")
			}
		})
	}
}

func TestApplyReadinessKeepsReconcilingAndStalledOnlyWhileTrue(t *testing.T) {
	cred := &iamv1alpha1.APICredential{}
	cred.Generation = 4
	applyReadiness(cred, readiness{metav1.ConditionUnknown, iamv1alpha1.ReasonProgressing, "issuing", false})
	if len(cred.Status.Conditions) != 2 {
		t.Fatalf("want Ready and Reconciling while in flight, got %+v", cred.Status.Conditions)
	}
	applyReadiness(cred, readiness{metav1.ConditionFalse, iamv1alpha1.ReasonInvalidSpec, "bad", true})
	if len(cred.Status.Conditions) != 2 || cred.Status.Conditions[1].Type != iamv1alpha1.ConditionStalled {
		t.Fatalf("want Ready and Stalled, got %+v", cred.Status.Conditions)
	}
	applyReadiness(cred, readiness{metav1.ConditionTrue, iamv1alpha1.ReasonIssued, "ok", false})
	if len(cred.Status.Conditions) != 1 {
		t.Fatalf("want Ready only, got %+v", cred.Status.Conditions)
	}
	for _, c := range cred.Status.Conditions {
		if c.ObservedGeneration != 4 {
			t.Errorf("condition %s has observedGeneration %d, want 4", c.Type, c.ObservedGeneration)
		}
	}
	if cred.Status.ObservedGeneration != 4 {
		t.Errorf("status.observedGeneration = %d, want 4", cred.Status.ObservedGeneration)
	}
}

func TestNextDeadline(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(d)) }
	issuedAt := at(-23 * time.Hour)

	cred := &iamv1alpha1.APICredential{}
	if _, ok := nextDeadline(cred, now); ok {
		t.Fatal("no deadline without grace periods, expiry or rotation period")
	}
	cred.Status.PreviousSecrets = []iamv1alpha1.PreviousSecret{{ExpiresAt: at(-time.Minute)}, {ExpiresAt: at(3 * time.Hour)}}
	expires := at(2 * time.Hour)
	cred.Spec.ExpiresAt = &expires
	assertDeadline(t, cred, now, now.Add(2*time.Hour))

	cred.Status.IssuedAt = &issuedAt
	cred.Spec.Rotation.Period = &metav1.Duration{Duration: 24 * time.Hour}
	assertDeadline(t, cred, now, now.Add(time.Hour))

	cred.Spec.Rotation.Period = nil
	past := at(-time.Second)
	cred.Spec.ExpiresAt = &past
	assertDeadline(t, cred, now, now.Add(3*time.Hour))
}

func assertDeadline(t *testing.T, cred *iamv1alpha1.APICredential, now, want time.Time) {
	t.Helper()
	got, ok := nextDeadline(cred, now)
	if !ok || !got.Equal(want) {
		t.Errorf("nextDeadline() = %v, %v; want %v", got, ok, want)
	}
}

func TestPruneExpiredSecrets(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	cred := &iamv1alpha1.APICredential{}
	cred.Status.PreviousSecrets = []iamv1alpha1.PreviousSecret{
		{Hash: "keep", ExpiresAt: metav1.NewTime(now.Add(time.Second))},
		{Hash: "at-deadline", ExpiresAt: metav1.NewTime(now)},
		{Hash: "gone", ExpiresAt: metav1.NewTime(now.Add(-time.Hour))},
	}
	pruneExpiredSecrets(cred, now)
	if len(cred.Status.PreviousSecrets) != 1 || cred.Status.PreviousSecrets[0].Hash != "keep" {
		t.Errorf("pruneExpiredSecrets() left %+v", cred.Status.PreviousSecrets)
	}
}
