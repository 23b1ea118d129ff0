package controllers

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// reconcileSecretless issues what a credential with spec.issueSecret: false has: a
// client ID, recorded in status, and no secret (status.secretHash stays empty, so no
// client secret authenticates it) and no Secret. Its workloads obtain tokens through
// the JWT-bearer grant with their ServiceAccount tokens (spec.workloadIdentity). The
// client ID is minted once, after the credential is confirmed live: a cache behind the
// API server must not mint a second one over a recorded one.
func (r *APICredentialReconciler) reconcileSecretless(ctx context.Context, cred *iamv1alpha1.APICredential, now time.Time, out *outcome) error {
	out.facts.secret = secretOK
	if cred.Status.ClientID != "" {
		return nil
	}
	if err := r.confirmCredential(ctx, cred); err != nil {
		return err
	}
	id, err := credential.NewClientID()
	if err != nil {
		return err
	}
	st := &cred.Status
	st.ClientID = id
	st.KeyVersion = cred.Spec.Rotation.KeyVersion
	t := metav1.NewTime(now.Truncate(time.Second))
	st.IssuedAt = &t
	return nil
}

// issued reports whether the credential has what token servers need: a secret hash, or,
// for a credential without a secret (spec.issueSecret: false), a client ID.
func issued(cred *iamv1alpha1.APICredential) bool {
	if cred.Spec.IssuesSecret() {
		return cred.Status.SecretHash != ""
	}
	return cred.Status.ClientID != ""
}
