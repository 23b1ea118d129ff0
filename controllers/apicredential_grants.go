package controllers

import (
	"context"
	"fmt"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/catalog"
)

// grantResolution is what the catalog says about a credential's spec.
type grantResolution struct {
	// account is the account the credential acts in (spec, else selected for it).
	account string
	// tokenURL is the first spec.tokenURL among the granted APIs, else the default.
	tokenURL string
	// invalid names every field that breaks the catalog or a scope rule; nil when valid.
	invalid error
}

// resolveGrants checks every granted API against the catalog: the APIDefinition exists,
// offers the permission, and the scope fits its level. It also selects the account.
// A returned error is transient (the API server could not answer); spec problems are in
// grantResolution.invalid, with messages that name the field.
func (r *APICredentialReconciler) resolveGrants(ctx context.Context, cred *iamv1alpha1.APICredential) (grantResolution, error) {
	var res grantResolution
	var defs iamv1alpha1.APIDefinitionList
	if err := r.List(ctx, &defs); err != nil {
		return res, fmt.Errorf("listing APIDefinitions: %w", err)
	}
	idx := catalog.NewIndex(defs.Items)
	if errs := catalog.Check(&cred.Spec, idx); len(errs) > 0 {
		res.invalid = errs.ToAggregate()
		return res, nil
	}
	for _, g := range cred.Spec.APIs {
		if u := idx[g.Name].Spec.TokenURL; u != "" {
			res.tokenURL = u
			break
		}
	}
	if res.tokenURL == "" {
		res.tokenURL = r.DefaultTokenURL
	}
	account, err := r.selectAccount(ctx, cred)
	if err != nil {
		return res, err
	}
	res.account = account
	return res, nil
}

// selectAccount returns spec.scope.account, else the namespace's iam.keysmith.dev/account
// label, else the namespace name ("scope selected for you"). It is shown in status and
// never written into spec, so GitOps tools see no drift.
// The admission webhook's `assume` check uses the same function (catalog.Account).
func (r *APICredentialReconciler) selectAccount(ctx context.Context, cred *iamv1alpha1.APICredential) (string, error) {
	return catalog.Account(ctx, r, cred)
}
