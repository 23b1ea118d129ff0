package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// +kubebuilder:webhook:path=/validate-iam-keysmith-dev-v1alpha1-apidefinition,mutating=false,failurePolicy=fail,sideEffects=None,groups=iam.keysmith.dev,resources=apidefinitions,verbs=update;delete,versions=v1alpha1,name=apidefinitions.iam.keysmith.dev,admissionReviewVersions=v1,timeoutSeconds=10

// APIDefinitionValidator keeps the catalog consistent with the credentials that use it:
// an API that credentials grant cannot be deleted, and a permission they use cannot be
// removed, until those credentials change.
type APIDefinitionValidator struct {
	// Reader lists APICredentials, normally the manager's cache.
	Reader client.Reader
}

// maxNamed is how many credentials a refusal names.
const maxNamed = 5

// ValidateCreate admits every APIDefinition the schema admits.
func (v *APIDefinitionValidator) ValidateCreate(context.Context, *iamv1alpha1.APIDefinition) (admission.Warnings, error) {
	return nil, nil
}

// ValidateUpdate refuses to remove a permission that credentials grant.
func (v *APIDefinitionValidator) ValidateUpdate(ctx context.Context, old, def *iamv1alpha1.APIDefinition) (admission.Warnings, error) {
	var removed []string
	for _, p := range old.Spec.Permissions {
		if def.Spec.Permission(p.Name) == nil {
			removed = append(removed, p.Name)
		}
	}
	var warnings admission.Warnings
	if old.Spec.ScopeLevel != def.Spec.ScopeLevel {
		warnings = append(warnings, fmt.Sprintf("spec.scopeLevel changes from %s to %s: credentials whose scope no longer fits become InvalidSpec", old.Spec.ScopeLevel, def.Spec.ScopeLevel))
	}
	if len(removed) == 0 {
		return warnings, nil
	}
	users, err := v.grantees(ctx, def.Name, removed)
	if err != nil {
		return nil, err
	}
	var errs field.ErrorList
	for _, perm := range removed {
		if names := users[perm]; len(names) > 0 {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "permissions"), fmt.Sprintf(
				"permission %q is granted by %s; change or remove those grants first", perm, describe(names))))
		}
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(iamv1alpha1.GroupVersion.WithKind("APIDefinition").GroupKind(), def.Name, errs)
	}
	return warnings, nil
}

// ValidateDelete refuses to delete an API that credentials grant.
func (v *APIDefinitionValidator) ValidateDelete(ctx context.Context, def *iamv1alpha1.APIDefinition) (admission.Warnings, error) {
	users, err := v.grantees(ctx, def.Name, nil)
	if err != nil {
		return nil, err
	}
	if names := users[""]; len(names) > 0 {
		return nil, apierrors.NewForbidden(iamv1alpha1.GroupVersion.WithResource("apidefinitions").GroupResource(), def.Name, fmt.Errorf(
			"it is granted by %s; remove the API from those credentials first", describe(names)))
	}
	return nil, nil
}

// grantees returns the namespace/name of the credentials that grant the API, by
// permission when perms is given, else all of them under "".
func (v *APIDefinitionValidator) grantees(ctx context.Context, api string, perms []string) (map[string][]string, error) {
	var creds iamv1alpha1.APICredentialList
	if err := v.Reader.List(ctx, &creds); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing APICredentials: %w", err))
	}
	out := map[string][]string{}
	for _, c := range creds.Items {
		if !c.DeletionTimestamp.IsZero() {
			continue // on its way out: its grants no longer count
		}
		for _, g := range c.Spec.APIs {
			if g.Name != api {
				continue
			}
			key := ""
			if perms != nil {
				if !slices.Contains(perms, g.Permission) {
					continue
				}
				key = g.Permission
			}
			out[key] = append(out[key], c.Namespace+"/"+c.Name)
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out, nil
}

// describe names up to maxNamed credentials and counts the rest.
func describe(names []string) string {
	noun := "APICredentials"
	if len(names) == 1 {
		noun = "APICredential"
	}
	shown := names[:min(len(names), maxNamed)]
	s := fmt.Sprintf("%d %s (%s", len(names), noun, strings.Join(shown, ", "))
	if len(names) > maxNamed {
		s += fmt.Sprintf(", and %d more", len(names)-maxNamed)
	}
	return s + ")"
}

// SetupWithManager registers the webhook with the manager's webhook server.
func (v *APIDefinitionValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &iamv1alpha1.APIDefinition{}).WithValidator(v).Complete()
}

var _ admission.Validator[*iamv1alpha1.APIDefinition] = &APIDefinitionValidator{}
