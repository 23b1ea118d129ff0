// Package catalog checks APICredential grants against the APIDefinition catalog. The
// reconciler and the admission webhook share it, so a spec the webhook admits is one the
// reconciler issues, and a catalog change that slips past admission is reported by the
// reconciler with the same messages. It also selects the account a credential acts in
// (account.go), so that status.account and the webhook's `assume` check agree.
package catalog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Index maps API names to their definitions.
type Index map[string]*iamv1alpha1.APIDefinition

// NewIndex indexes a list of APIDefinitions by name.
func NewIndex(defs []iamv1alpha1.APIDefinition) Index {
	idx := make(Index, len(defs))
	for i := range defs {
		idx[defs[i].Name] = &defs[i]
	}
	return idx
}

// Names returns the API names of the catalog, sorted.
func (idx Index) Names() []string {
	names := make([]string, 0, len(idx))
	for n := range idx {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// describe lists the catalog for an error message, at most ten names.
func (idx Index) describe() string {
	names := idx.Names()
	if len(names) == 0 {
		return "the catalog is empty"
	}
	quoted := make([]string, 0, min(len(names), 10))
	for _, n := range names[:min(len(names), 10)] {
		quoted = append(quoted, strconv.Quote(n))
	}
	more := ""
	if len(names) > 10 {
		more = fmt.Sprintf(" and %d more", len(names)-10)
	}
	return "known APIs: " + strings.Join(quoted, ", ") + more
}

// Check validates a credential spec against the catalog: every API exists, its
// permission is one the API offers, and the scope fits the API's level (Workspace level:
// at least one workspace; Org level: neither account nor workspaces). Each error names
// the field, the offending value and what is allowed.
func Check(spec *iamv1alpha1.APICredentialSpec, idx Index) field.ErrorList {
	var errs field.ErrorList
	apis := field.NewPath("spec", "apis")
	for i, g := range spec.APIs {
		def, ok := idx[g.Name]
		if !ok {
			errs = append(errs, field.Invalid(apis.Index(i).Child("name"), g.Name, "no APIDefinition with this name exists; "+idx.describe()))
			continue
		}
		if def.Spec.Permission(g.Permission) == nil {
			errs = append(errs, field.NotSupported(apis.Index(i).Child("permission"), g.Permission, def.Spec.PermissionNames()))
		}
		switch def.Spec.ScopeLevel {
		case iamv1alpha1.ScopeLevelWorkspace:
			if len(spec.Scope.Workspaces) == 0 {
				errs = append(errs, field.Required(field.NewPath("spec", "scope", "workspaces"),
					fmt.Sprintf("APIDefinition %q (spec.apis[%d]) applies at the Workspace level: name at least one workspace", g.Name, i)))
			}
		case iamv1alpha1.ScopeLevelOrg:
			if spec.Scope.Account != "" {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "scope", "account"),
					fmt.Sprintf("APIDefinition %q (spec.apis[%d]) applies at the Org level: a credential for it names no account", g.Name, i)))
			}
			if len(spec.Scope.Workspaces) > 0 {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "scope", "workspaces"),
					fmt.Sprintf("APIDefinition %q (spec.apis[%d]) applies at the Org level: a credential for it names no workspaces", g.Name, i)))
			}
		}
	}
	return dedupe(errs)
}

// dedupe drops repeated errors: several Workspace-level APIs missing workspaces say so once
// per API, which is useful, but identical lines are not.
func dedupe(errs field.ErrorList) field.ErrorList {
	seen := map[string]bool{}
	out := errs[:0]
	for _, e := range errs {
		if k := e.Error(); !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}
