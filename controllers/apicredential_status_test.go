package controllers

import (
	"errors"
	"slices"
	"testing"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func TestComputeReadiness(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	past, future := metav1.NewTime(now.Add(-time.Second)), metav1.NewTime(now.Add(time.Hour))
	issued := iamv1alpha1.APICredentialStatus{SecretHash: "sha256:00"}
	invalid := errors.New("spec.apis[0].name: Invalid value")
	transient := errors.New(`creating Secret "x": etcdserver: request timed out`)
	const (
		yes, no, unknown = string(metav1.ConditionTrue), string(metav1.ConditionFalse), string(metav1.ConditionUnknown)
	)

	tests := []struct {
		name      string
		active    *bool
		expiresAt *metav1.Time
		status    iamv1alpha1.APICredentialStatus
		facts     readinessFacts
		// Ready's status and reason; Stalled or Reconciling; Active's status and reason.
		wantReady, wantReason   string
		wantStalled, wantRecon  bool
		wantActive, wantActReas string
	}{
		{"issued", nil, nil, issued, readinessFacts{}, yes, iamv1alpha1.ReasonIssued, false, false, yes, iamv1alpha1.ReasonIssued},
		{"issued, expiry ahead", nil, &future, issued, readinessFacts{}, yes, iamv1alpha1.ReasonIssued, false, false, yes, iamv1alpha1.ReasonIssued},
		{"not yet issued", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{}, unknown, iamv1alpha1.ReasonProgressing, false, true, no, iamv1alpha1.ReasonProgressing},
		{"inactive is its declared state", ptr.To(false), nil, issued, readinessFacts{}, yes, iamv1alpha1.ReasonInactive, false, false, no, iamv1alpha1.ReasonInactive},
		{"inactive wins over expired", ptr.To(false), &past, issued, readinessFacts{}, yes, iamv1alpha1.ReasonInactive, false, false, no, iamv1alpha1.ReasonInactive},
		{"expired at the second is its declared state", nil, &past, issued, readinessFacts{}, yes, iamv1alpha1.ReasonExpired, false, false, no, iamv1alpha1.ReasonExpired},
		{"invalid spec wins over everything", ptr.To(false), &past, issued, readinessFacts{invalidSpec: invalid, secret: secretMissing, unfinished: transient}, no, iamv1alpha1.ReasonInvalidSpec, true, false, no, iamv1alpha1.ReasonInactive},
		{"a transient error: retrying, with its message", nil, nil, issued, readinessFacts{unfinished: transient}, unknown, iamv1alpha1.ReasonRetrying, false, true, yes, iamv1alpha1.ReasonIssued},
		{"a transient error on the first reconcile", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{unfinished: transient}, unknown, iamv1alpha1.ReasonRetrying, false, true, no, iamv1alpha1.ReasonProgressing},
		{"a transient error wins over a Secret problem seen before it", nil, nil, issued, readinessFacts{unfinished: transient, secret: secretModified}, unknown, iamv1alpha1.ReasonRetrying, false, true, yes, iamv1alpha1.ReasonIssued},
		{"the cache behind: progressing", nil, nil, issued, readinessFacts{unfinished: errCacheBehind}, unknown, iamv1alpha1.ReasonProgressing, false, true, yes, iamv1alpha1.ReasonIssued},
		{"secret conflict", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretConflict}, no, iamv1alpha1.ReasonSecretConflict, true, false, no, iamv1alpha1.ReasonProgressing},
		{"client ID taken is a conflict", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretClientIDTaken}, no, iamv1alpha1.ReasonSecretConflict, true, false, no, iamv1alpha1.ReasonProgressing},
		{"secret modified", nil, nil, issued, readinessFacts{secret: secretModified}, no, iamv1alpha1.ReasonSecretModified, true, false, yes, iamv1alpha1.ReasonIssued},
		{"secret unbound is modified", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretUnbound}, no, iamv1alpha1.ReasonSecretModified, true, false, no, iamv1alpha1.ReasonProgressing},
		{"secret missing: clients that hold it keep working", ptr.To(true), nil, issued, readinessFacts{secret: secretMissing}, no, iamv1alpha1.ReasonSecretMissing, true, false, yes, iamv1alpha1.ReasonIssued},
		{"a missing Secret wins over inactive", ptr.To(false), nil, issued, readinessFacts{secret: secretMissing}, no, iamv1alpha1.ReasonSecretMissing, true, false, no, iamv1alpha1.ReasonInactive},
		{"a missing Secret wins over expired", nil, &past, issued, readinessFacts{secret: secretMissing}, no, iamv1alpha1.ReasonSecretMissing, true, false, no, iamv1alpha1.ReasonExpired},
		{"a modified Secret wins over inactive", ptr.To(false), nil, issued, readinessFacts{secret: secretModified}, no, iamv1alpha1.ReasonSecretModified, true, false, no, iamv1alpha1.ReasonInactive},
		{"a conflict wins over inactive and expired", ptr.To(false), &past, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretConflict}, no, iamv1alpha1.ReasonSecretConflict, true, false, no, iamv1alpha1.ReasonInactive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{Status: tt.status}
			cred.Spec.Active = tt.active
			cred.Spec.ExpiresAt = tt.expiresAt
			got := computeReadiness(cred, tt.facts, now)
			if string(got.ready.status) != tt.wantReady || got.ready.reason != tt.wantReason ||
				got.stalled != tt.wantStalled || got.reconciling != tt.wantRecon {
				t.Errorf("Ready = %s/%s stalled=%v reconciling=%v, want %s/%s stalled=%v reconciling=%v",
					got.ready.status, got.ready.reason, got.stalled, got.reconciling, tt.wantReady, tt.wantReason, tt.wantStalled, tt.wantRecon)
			}
			if string(got.active.status) != tt.wantActive || got.active.reason != tt.wantActReas {
				t.Errorf("Active = %s/%s, want %s/%s", got.active.status, got.active.reason, tt.wantActive, tt.wantActReas)
			}
			if got.ready.message == "" || got.active.message == "" {
				t.Error("every reason carries a message")
			}
			if tt.facts.unfinished != nil && tt.facts.invalidSpec == nil && got.ready.message != tt.facts.unfinished.Error() {
				t.Errorf("Ready message = %q, want the error's %q", got.ready.message, tt.facts.unfinished.Error())
			}
		})
	}
}

// TestConditionsReadByKstatus runs kstatus Compute, what Flux's wait and health checks
// run, over the conditions of every reason: only a person-must-act reason reads Failed,
// a deliberately inactive or expired credential reads Current, and one whose reconcile
// could not finish reads InProgress.
func TestConditionsReadByKstatus(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	past := metav1.NewTime(now.Add(-time.Second))
	issued := iamv1alpha1.APICredentialStatus{SecretHash: "sha256:00"}
	tests := []struct {
		name      string
		active    *bool
		expiresAt *metav1.Time
		status    iamv1alpha1.APICredentialStatus
		facts     readinessFacts
		want      kstatus.Status
	}{
		{iamv1alpha1.ReasonIssued, nil, nil, issued, readinessFacts{}, kstatus.CurrentStatus},
		{iamv1alpha1.ReasonInactive, ptr.To(false), nil, issued, readinessFacts{}, kstatus.CurrentStatus},
		{iamv1alpha1.ReasonExpired, nil, &past, issued, readinessFacts{}, kstatus.CurrentStatus},
		{iamv1alpha1.ReasonSecretMissing, nil, nil, issued, readinessFacts{secret: secretMissing}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonSecretMissing + " while inactive", ptr.To(false), nil, issued, readinessFacts{secret: secretMissing}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonInvalidSpec, nil, nil, issued, readinessFacts{invalidSpec: errors.New("spec.apis[0].name: Invalid value")}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonSecretModified, nil, nil, issued, readinessFacts{secret: secretModified}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonSecretModified + " (unbound)", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretUnbound}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonSecretConflict, nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretConflict}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonSecretConflict + " (client ID taken)", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{secret: secretClientIDTaken}, kstatus.FailedStatus},
		{iamv1alpha1.ReasonRetrying, nil, nil, issued, readinessFacts{unfinished: errors.New("etcdserver: request timed out")}, kstatus.InProgressStatus},
		{iamv1alpha1.ReasonRetrying + " on the first reconcile", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{unfinished: errors.New("etcdserver: request timed out")}, kstatus.InProgressStatus},
		{iamv1alpha1.ReasonProgressing + " (cache behind)", nil, nil, issued, readinessFacts{unfinished: errCacheBehind}, kstatus.InProgressStatus},
		{iamv1alpha1.ReasonProgressing + " (not issued)", nil, nil, iamv1alpha1.APICredentialStatus{}, readinessFacts{}, kstatus.InProgressStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{Status: tt.status}
			cred.Namespace, cred.Name, cred.Generation = "team-a", "checkout", 3
			cred.Spec.Active, cred.Spec.ExpiresAt = tt.active, tt.expiresAt
			applyReadiness(cred, computeReadiness(cred, tt.facts, now))
			if got := kstatusCompute(t, cred); got.Status != tt.want {
				t.Errorf("kstatus = %s (%s), want %s; conditions %+v", got.Status, got.Message, tt.want, cred.Status.Conditions)
			}
		})
	}
}

// kstatusCompute runs kstatus Compute on the credential as an API client sees it.
func kstatusCompute(t *testing.T, cred *iamv1alpha1.APICredential) *kstatus.Result {
	t.Helper()
	cred = cred.DeepCopy()
	cred.SetGroupVersionKind(iamv1alpha1.GroupVersion.WithKind("APICredential"))
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cred)
	if err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestApplyReadinessKeepsReconcilingAndStalledOnlyWhileTrue(t *testing.T) {
	cred := &iamv1alpha1.APICredential{}
	cred.Generation = 4
	active := verdict{metav1.ConditionTrue, iamv1alpha1.ReasonIssued, "accepted"}
	types := func() []string {
		var out []string
		for _, c := range cred.Status.Conditions {
			out = append(out, c.Type+"="+string(c.Status)+"/"+c.Reason)
		}
		return out
	}
	applyReadiness(cred, readiness{ready: verdict{metav1.ConditionUnknown, iamv1alpha1.ReasonRetrying, "timeout"}, active: active, reconciling: true})
	if got := types(); !slices.Equal(got, []string{"Ready=Unknown/Retrying", "Active=True/Issued", "Reconciling=True/Retrying"}) {
		t.Fatalf("want Ready, Active and Reconciling while a reconcile could not finish, got %v", got)
	}
	applyReadiness(cred, readiness{ready: verdict{metav1.ConditionFalse, iamv1alpha1.ReasonInvalidSpec, "bad"}, active: active, stalled: true})
	if got := types(); !slices.Equal(got, []string{"Ready=False/InvalidSpec", "Active=True/Issued", "Stalled=True/InvalidSpec"}) {
		t.Fatalf("want Ready, Active and Stalled, got %v", got)
	}
	applyReadiness(cred, readiness{ready: verdict{metav1.ConditionTrue, iamv1alpha1.ReasonIssued, "ok"}, active: active})
	if got := types(); !slices.Equal(got, []string{"Ready=True/Issued", "Active=True/Issued"}) {
		t.Fatalf("want Ready and Active only, got %v", got)
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

func TestRequeueFor(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return ptr.To(metav1.NewTime(now.Add(d))) }
	grace := func(d time.Duration) []iamv1alpha1.PreviousSecret {
		return []iamv1alpha1.PreviousSecret{{Hash: "sha256:01", ExpiresAt: *at(d)}}
	}
	tests := []struct {
		name      string
		expiresAt *metav1.Time
		period    time.Duration
		issuedAt  *metav1.Time
		previous  []iamv1alpha1.PreviousSecret
		facts     readinessFacts
		want      time.Duration
	}{
		{"nothing ahead: wait for events, never poll", nil, 0, at(-time.Hour), nil, readinessFacts{}, 0},
		{"the expiry", at(2 * time.Hour), 0, nil, nil, readinessFacts{}, 2 * time.Hour},
		{"an expiry passed is no deadline", at(-time.Second), 0, nil, nil, readinessFacts{}, 0},
		{"the end of a grace period first", at(2 * time.Hour), 0, nil, grace(10 * time.Minute), readinessFacts{}, 10 * time.Minute},
		{"the automatic rotation", nil, 24 * time.Hour, at(-23 * time.Hour), nil, readinessFacts{}, time.Hour},
		{"a foreign Secret: look again every minute", nil, 0, nil, nil, readinessFacts{secret: secretConflict}, conflictRecheck},
		{"a taken client ID: look again every minute", nil, 0, nil, nil, readinessFacts{secret: secretClientIDTaken}, conflictRecheck},
		{"a conflict with a nearer deadline keeps it", at(30 * time.Second), 0, nil, nil, readinessFacts{secret: secretConflict}, 30 * time.Second},
		{"a conflict with a later deadline looks again sooner", at(time.Hour), 0, nil, nil, readinessFacts{secret: secretConflict}, conflictRecheck},
		{"an invalid spec waits for a change, not a minute", nil, 0, nil, nil, readinessFacts{invalidSpec: errors.New("bad"), secret: secretConflict}, 0},
		{"an invalid spec still prunes on time", nil, 0, nil, grace(5 * time.Minute), readinessFacts{invalidSpec: errors.New("bad")}, 5 * time.Minute},
		{"a missing Secret waits for events", nil, 0, nil, nil, readinessFacts{secret: secretMissing}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{}
			cred.Spec.ExpiresAt = tt.expiresAt
			if tt.period > 0 {
				cred.Spec.Rotation.Period = &metav1.Duration{Duration: tt.period}
			}
			cred.Status.IssuedAt, cred.Status.PreviousSecrets = tt.issuedAt, tt.previous
			if got := requeueFor(cred, tt.facts, now); got.RequeueAfter != tt.want {
				t.Errorf("requeueFor() = %s, want %s", got.RequeueAfter, tt.want)
			}
		})
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
