package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
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
	var errs field.ErrorList
	apis := field.NewPath("spec", "apis")
	for i, g := range cred.Spec.APIs {
		def := &iamv1alpha1.APIDefinition{}
		if err := r.Get(ctx, client.ObjectKey{Name: g.Name}, def); err != nil {
			if apierrors.IsNotFound(err) {
				errs = append(errs, field.Invalid(apis.Index(i).Child("name"), g.Name, "no APIDefinition with this name exists"))
				continue
			}
			return res, fmt.Errorf("reading APIDefinition %q: %w", g.Name, err)
		}
		if def.Spec.Permission(g.Permission) == nil {
			errs = append(errs, field.NotSupported(apis.Index(i).Child("permission"), g.Permission, def.Spec.PermissionNames()))
		}
		if def.Spec.ScopeLevel == iamv1alpha1.ScopeLevelWorkspace && len(cred.Spec.Scope.Workspaces) == 0 {
			errs = append(errs, field.Required(field.NewPath("spec", "scope", "workspaces"),
				fmt.Sprintf("APIDefinition %q (spec.apis[%d]) applies at the Workspace level: name at least one workspace", g.Name, i)))
		}
		if res.tokenURL == "" {
			res.tokenURL = def.Spec.TokenURL
		}
	}
	if len(errs) > 0 {
		res.invalid = errs.ToAggregate()
		return res, nil
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
func (r *APICredentialReconciler) selectAccount(ctx context.Context, cred *iamv1alpha1.APICredential) (string, error) {
	if a := cred.Spec.Scope.Account; a != "" {
		return a, nil
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, client.ObjectKey{Name: cred.Namespace}, ns); err != nil {
		return "", fmt.Errorf("reading namespace %q: %w", cred.Namespace, err)
	}
	if a := ns.GetLabels()[iamv1alpha1.AccountLabel]; a != "" {
		return a, nil
	}
	return cred.Namespace, nil
}
